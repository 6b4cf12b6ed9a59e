"""Ed25519 identity signatures (RFC 8032) over bytes the caller made canonical.

A private key comes from the OS generator inside OpenSSL, or from a 32-byte
RFC 8032 seed (`from_private_bytes`: secagg's per-round keys come from a round
seed), and lives only in memory: there is deliberately no way to export one, so
a run's identity keys die with its process and a resumed run pins a new roster
(`keyfile` is the one exception, for parties on their own machines).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class SigningKey:
    """An in-memory Ed25519 private key; `public_key` is its 32 raw public bytes."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key: bytes = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> SigningKey:
        """The key of the 32-byte RFC 8032 private seed `raw`."""
        if not isinstance(raw, bytes) or len(raw) != PRIVATE_KEY_BYTES:
            raise ValueError("an Ed25519 private key is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:  # never show the private key
        return f"SigningKey(public={self.public_key.hex()[:16]}...)"

    def __reduce__(self) -> object:
        raise TypeError("signing keys cannot be pickled or copied out of memory")


def verify_signature(*, public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of `message` under `public_key`.

    Malformed keys or signatures count as invalid rather than raising, so a
    verifier reports them like any other forgery.
    """
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
