"""Primitives under the protocols: use them through a protocol or the transcript,
not directly (pyca/cryptography's hazmat convention)."""

from protocols.hazmat.signing import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    SigningKey,
    verify_signature,
)

__all__ = ["PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "SigningKey", "verify_signature"]
