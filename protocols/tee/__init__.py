"""A SIMULATED trusted execution environment for blind aggregation: measurement,
a software vendor root and platform certificates (X.509, P-384), quotes and their
verification, sealed state, and the enclave aggregator. Nothing here is hardware;
see docs/ckks_tee.md for what the simulation does and does not show."""

from protocols.tee.errors import (
    ATTESTATION_CHECKS,
    AttestationError,
    CertificateChainError,
    DebugEnclaveError,
    KeyBindingError,
    MalformedQuoteError,
    MeasurementError,
    QuoteSignatureError,
    ReplayedNonceError,
    SimulatedQuoteError,
    SimulatedRootError,
    StaleSvnError,
    UnsealError,
)
from protocols.tee.measurement import ENCLAVE_FILES, enclave_config, manifest, measure

# Every output that names a tee round says this (train summary, privacy statement,
# `transcript show`, `tee verify`): the enclave is software run by the aggregator.
from protocols.tee.notice import SIMULATED_NOTICE
from protocols.tee.protocol import TeeProtocol
from protocols.tee.quote import Evidence, Quote, QuoteBody, report_data
from protocols.tee.vendor import SimulatedPlatform, SimulatedVendor
from protocols.tee.verify import (
    AttestationPolicy,
    ReplayCache,
    is_simulated_root,
    root_fingerprint,
    verify_quote,
)

__all__ = [
    "ATTESTATION_CHECKS", "ENCLAVE_FILES", "AttestationError", "AttestationPolicy",
    "CertificateChainError", "DebugEnclaveError", "Evidence", "KeyBindingError",
    "MalformedQuoteError", "MeasurementError", "Quote", "QuoteBody", "QuoteSignatureError",
    "ReplayCache", "ReplayedNonceError", "SIMULATED_NOTICE", "SimulatedPlatform",
    "SimulatedQuoteError", "SimulatedRootError", "SimulatedVendor", "StaleSvnError",
    "TeeProtocol", "UnsealError", "enclave_config", "is_simulated_root", "manifest", "measure",
    "report_data", "root_fingerprint", "verify_quote",
]
