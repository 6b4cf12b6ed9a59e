"""A SIMULATED trusted execution environment for blind aggregation: measurement,
a software vendor root and platform certificates (X.509, P-384), quotes and their
verification, sealed state, and the enclave aggregator. Nothing here is hardware;
see docs/ckks_tee.md for what the simulation does and does not show."""

# Every output that names a tee round says this (train summary, privacy statement,
# `transcript show`, `tee verify`): the enclave is software run by the aggregator.
SIMULATED_NOTICE = "simulated: no confidentiality against the operator of the aggregator"

from protocols.tee.errors import (  # noqa: E402
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
    StaleSvnError,
    UnsealError,
)
from protocols.tee.measurement import ENCLAVE_FILES, enclave_config, manifest, measure
from protocols.tee.protocol import TeeProtocol
from protocols.tee.quote import Evidence, Quote, QuoteBody, report_data
from protocols.tee.vendor import SimulatedPlatform, SimulatedVendor
from protocols.tee.verify import AttestationPolicy, ReplayCache, verify_quote

__all__ = [
    "ATTESTATION_CHECKS", "ENCLAVE_FILES", "AttestationError", "AttestationPolicy",
    "CertificateChainError", "DebugEnclaveError", "Evidence", "KeyBindingError",
    "MalformedQuoteError", "MeasurementError", "Quote", "QuoteBody", "QuoteSignatureError",
    "ReplayCache", "ReplayedNonceError", "SIMULATED_NOTICE", "SimulatedPlatform", "SimulatedQuoteError",
    "SimulatedVendor", "StaleSvnError", "TeeProtocol", "UnsealError", "enclave_config",
    "manifest", "measure", "report_data", "verify_quote",
]
