"""Verifying a quote, check by check, each failure its own error.

Order: production (simulated quotes are refused outright), the simulated root
(with a real root configured, or in production, a certificate issued under the
public simulated root is refused whatever the quote's own `simulated` flag says:
anyone can mint one), certificate chain to the trusted root, quote signature by the certified platform key, measurement
and signer against the allowlist, debug off, security version at least the
minimum, nonce freshness (the quote answers this verifier's fresh nonce, and no
accepted quote used it before), key binding (report_data = SHA-512(nonce ||
enclave key || transcript head) for the key and round the verifier will use).
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from protocols.hazmat.certificates import Certificate
from protocols.tee.errors import (
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
)
from protocols.tee.quote import QUOTE_VERSION, SIGNER_ID, Quote, QuoteBody, report_data
from protocols.tee.vendor import SimulatedVendor


def _well_known_root() -> Certificate:
    return SimulatedVendor.well_known().certificate


def load_root(pem: bytes) -> Certificate:
    """A trusted vendor root from its PEM; `ValueError` if it is not one certificate."""
    return Certificate.from_pem(pem)


def root_fingerprint(root: Certificate) -> str:
    """SHA-256 of the root certificate's DER, hex: how outputs name a trusted root."""
    return root.sha256()


def is_simulated_root(root: Certificate) -> bool:
    """True for any certificate of the simulated root's key: its private key is public,
    so a re-issued certificate of that key is no more a root of trust."""
    return root.public_key_spki() == _well_known_root().public_key_spki()


@dataclass(frozen=True)
class AttestationPolicy:
    """What a verifier accepts. `trusted_root` defaults to the simulation's
    well-known root; any other root is "real": quotes under the simulated root are
    then refused. `production=True` refuses every simulated quote."""

    allowed_measurements: tuple[str, ...]
    min_svn: int = 1
    allow_debug: bool = False
    production: bool = False
    signer_ids: tuple[str, ...] = (SIGNER_ID,)
    trusted_root: Certificate = field(default_factory=_well_known_root)

    @property
    def simulated_root(self) -> bool:
        return is_simulated_root(self.trusted_root)


class ReplayCache:
    """Nonces of accepted quotes; the oldest are forgotten past `capacity`."""

    def __init__(self, *, seen: Iterable[bytes] = (), capacity: int = 1 << 16) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        for nonce in seen:
            self.add(nonce)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._seen

    def add(self, nonce: bytes) -> None:
        self._seen[nonce] = None
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def nonces(self) -> tuple[bytes, ...]:
        return tuple(self._seen)


def verify_quote(
    *,
    quote: Quote,
    policy: AttestationPolicy,
    nonce: bytes | None,
    enclave_public_key: bytes | None,
    transcript_head: bytes | None,
    replay_cache: ReplayCache | None = None,
    now: dt.datetime | None = None,
) -> QuoteBody:
    """Return the verified body or raise the `AttestationError` of the first failing
    check. `nonce`, `enclave_public_key` and `transcript_head` are what the verifier
    expects; None skips that comparison (the CLI, when not given one)."""
    body = quote.body
    if body.version != QUOTE_VERSION:
        raise MalformedQuoteError(f"quote version {body.version} is not {QUOTE_VERSION}")
    if policy.production and body.simulated:
        raise SimulatedQuoteError("production verification refuses a SIMULATED enclave's quote")
    if (policy.production or not policy.simulated_root) and _issued_by_simulated_root(quote):
        raise SimulatedRootError(
            "the platform certificate is issued under the public simulated root, under which "
            "anyone can mint a quote; the trusted root is "
            f"{root_fingerprint(policy.trusted_root)[:16]}... (SHA-256)"
        )
    _check_chain(quote.certificate, policy.trusted_root,
                 now if now is not None else dt.datetime.now(dt.UTC))
    _check_signature(quote)
    if body.measurement not in policy.allowed_measurements:
        raise MeasurementError(f"measurement {body.measurement[:16]}... is not on the allowlist")
    if body.signer_id not in policy.signer_ids:
        raise MeasurementError(f"signer {body.signer_id[:16]}... is not on the allowlist")
    if body.debug and not policy.allow_debug:
        raise DebugEnclaveError("the enclave runs in debug mode: its memory is open to the host")
    if body.svn < policy.min_svn:
        raise StaleSvnError(f"security version {body.svn} is below the minimum {policy.min_svn}")
    ev = quote.evidence
    if nonce is not None and ev.nonce != nonce:
        raise ReplayedNonceError("the quote answers another nonce, not this verifier's fresh one")
    if replay_cache is not None and ev.nonce in replay_cache:
        raise ReplayedNonceError("the quote's nonce was already used by an accepted quote")
    expected = report_data(nonce=ev.nonce, enclave_public_key=ev.enclave_public_key,
                           transcript_head=ev.transcript_head)
    if body.report_data != expected:
        raise KeyBindingError("report_data is not SHA-512(nonce || enclave key || transcript head)")
    if enclave_public_key is not None and ev.enclave_public_key != enclave_public_key:
        raise KeyBindingError("the quote binds another enclave key than the one offered")
    if transcript_head is not None and ev.transcript_head != transcript_head:
        raise KeyBindingError("the quote binds another transcript head (another round)")
    if replay_cache is not None:
        replay_cache.add(ev.nonce)
    return body


def _issued_by_simulated_root(quote: Quote) -> bool:
    """Signed by the simulated root's key, whatever issuer name the certificate gives."""
    return quote.certificate.signed_by_key(SimulatedVendor.well_known().key.public_key)


def _check_chain(cert: Certificate, root: Certificate, now: dt.datetime) -> None:
    if not cert.issued_by(root):
        raise CertificateChainError(
            "the platform certificate is not issued by the trusted vendor root"
        )
    for c, what in ((root, "vendor root"), (cert, "platform certificate")):
        if not c.valid_at(now):
            raise CertificateChainError(f"the {what} is not valid at {now.isoformat()}")
    if not cert.has_basic_constraints():
        raise CertificateChainError("the platform certificate has no basic constraints")
    if not cert.is_end_entity() or cert.p384_public_key() is None:
        raise CertificateChainError("the platform certificate is not a P-384 end-entity certificate")


def _check_signature(quote: Quote) -> None:
    name = quote.certificate.common_name
    if not name or not name.endswith(" " + quote.body.platform_id):
        raise QuoteSignatureError("the quote names another platform than its certificate")
    key = quote.certificate.p384_public_key()
    if key is None or not key.verify(quote.signature, quote.body.signed_bytes()):
        raise QuoteSignatureError("the quote's signature does not verify under the platform key")
