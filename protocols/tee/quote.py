"""Attestation quotes of the simulated enclave.

A quote is a signed body (version, measurement, signer id, security version,
debug flag, platform id, `simulated: true`, report data) plus the platform
certificate that vouches for the signing key, and the evidence the report data
commits to:

    report_data = SHA-512(nonce || enclave public key || transcript head)

The nonce is the verifier's challenge (freshness), the enclave public key is the
X25519 key clients will encrypt to (key binding), and the transcript head pins
the round the quote was made for. The body is signed (ECDSA P-384, SHA-384) over
its canonical JSON with a domain prefix. The document form (`to_json`) is what
travels in messages and what `securediff tee verify` reads.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from protocols.hazmat.certificates import Certificate
from protocols.messages import canonical_json
from protocols.tee.errors import MalformedQuoteError

QUOTE_VERSION = 1
QUOTE_DOMAIN = b"securediff/tee/quote/v1\n"
SIGNER_ID = hashlib.sha384(b"securediff/tee/simulated-enclave-signer/v1").hexdigest()
MAX_QUOTE_BYTES = 64 * 1024


def report_data(*, nonce: bytes, enclave_public_key: bytes, transcript_head: bytes) -> str:
    return hashlib.sha512(nonce + enclave_public_key + transcript_head).hexdigest()


@dataclass(frozen=True)
class QuoteBody:
    version: int
    measurement: str
    signer_id: str
    svn: int
    debug: bool
    platform_id: str
    simulated: bool
    report_data: str

    def signed_bytes(self) -> bytes:
        return QUOTE_DOMAIN + canonical_json(asdict(self))


@dataclass(frozen=True)
class Evidence:
    """The preimage of `report_data`, carried beside the body so a verifier can
    name which part does not match."""

    nonce: bytes
    enclave_public_key: bytes
    transcript_head: bytes


@dataclass(frozen=True)
class Quote:
    body: QuoteBody
    signature: bytes
    certificate: Certificate
    evidence: Evidence

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": QUOTE_VERSION,
            "kind": "securediff-tee-quote",
            "body": asdict(self.body),
            "signature": self.signature.hex(),
            "certificate": base64.b64encode(self.certificate.der()).decode(),
            "evidence": {
                "nonce": self.evidence.nonce.hex(),
                "enclave_public_key": self.evidence.enclave_public_key.hex(),
                "transcript_head": self.evidence.transcript_head.hex(),
            },
        }

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> Quote:
        if not isinstance(data, bytes) or len(data) > MAX_QUOTE_BYTES:
            raise MalformedQuoteError("a quote is a JSON document of at most 64 KiB")
        try:
            return cls.from_dict(json.loads(data.decode("utf-8")))
        except (UnicodeDecodeError, ValueError) as exc:
            if isinstance(exc, MalformedQuoteError):
                raise
            raise MalformedQuoteError(f"not a quote document: {exc}") from None

    @classmethod
    def from_dict(cls, obj: Any) -> Quote:
        try:
            if obj["v"] != QUOTE_VERSION or obj["kind"] != "securediff-tee-quote":
                raise MalformedQuoteError("unsupported quote version or kind")
            b, ev = obj["body"], obj["evidence"]
            types = {"version": int, "measurement": str, "signer_id": str, "svn": int,
                     "debug": bool, "platform_id": str, "simulated": bool, "report_data": str}
            if set(b) != set(types) or not all(
                type(b[k]) is t for k, t in types.items()
            ):
                raise MalformedQuoteError("quote body fields are missing or mistyped")
            body = QuoteBody(**b)
            cert = Certificate.from_der(base64.b64decode(obj["certificate"], validate=True))
            evidence = Evidence(
                nonce=bytes.fromhex(ev["nonce"]),
                enclave_public_key=bytes.fromhex(ev["enclave_public_key"]),
                transcript_head=bytes.fromhex(ev["transcript_head"]),
            )
            return cls(body=body, signature=bytes.fromhex(obj["signature"]),
                       certificate=cert, evidence=evidence)
        except MalformedQuoteError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedQuoteError(f"malformed quote: {exc!r}") from None
