"""Attestation failures, one class per check, so callers and the CLI can say which
check refused a quote. All are `ProtocolAbort`: a quote that fails is the
aggregator's doing, and the round cannot go on with it."""

from __future__ import annotations

from typing import ClassVar

from protocols.errors import ProtocolAbort, ProtocolError


class AttestationError(ProtocolAbort):
    check: ClassVar[str] = "attestation"


class MalformedQuoteError(AttestationError):
    check = "format"


class CertificateChainError(AttestationError):
    """The platform certificate does not chain to the trusted vendor root."""

    check = "chain"


class QuoteSignatureError(AttestationError):
    check = "signature"


class SimulatedQuoteError(AttestationError):
    """Production verification refuses quotes from the simulation."""

    check = "production"


class SimulatedRootError(SimulatedQuoteError):
    """A real attestation root is configured (or production is on) and the quote chains
    to the public simulated root, under which anyone can mint a quote, whatever the
    quote's own `simulated` flag says."""

    check = "simulated_root"


class MeasurementError(AttestationError):
    """The enclave's measurement (or signer) is not on the allowlist."""

    check = "measurement"


class DebugEnclaveError(AttestationError):
    check = "debug"


class StaleSvnError(AttestationError):
    check = "svn"


class ReplayedNonceError(AttestationError):
    """The quote answers a nonce other than the fresh one, or one already used."""

    check = "nonce"


class KeyBindingError(AttestationError):
    """The report data does not bind the enclave key (and round) the client uses."""

    check = "key_binding"


class UnsealError(ProtocolError, ValueError):
    """Sealed enclave state that does not open for this code on this platform."""


ATTESTATION_CHECKS = (
    "format", "production", "simulated_root", "chain", "signature", "measurement", "debug", "svn",
    "nonce", "key_binding",
)
