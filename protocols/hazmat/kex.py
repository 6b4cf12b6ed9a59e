"""X25519 key agreement with HKDF-SHA256 (RFC 7748, RFC 5869).

Private keys come from OpenSSL's OS-seeded generator and stay in memory. The
caller binds every derived key to its context (protocol, round, stage, the two
parties) through `info`, so a key recovered in one round or stage opens
nothing in another.
"""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocols.errors import ProtocolInputError

PUBLIC_KEY_BYTES = 32
_ALL_ZERO = bytes(32)


class AgreementKey:
    """An in-memory X25519 private key; `public_key` is its 32 raw public bytes."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key
        self.public_key: bytes = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> AgreementKey:
        return cls(X25519PrivateKey.generate())

    def derive(self, peer_public_key: bytes, *, info: bytes, length: int = 32) -> bytes:
        """HKDF-SHA256 over the X25519 shared secret with `peer_public_key`."""
        if not isinstance(peer_public_key, bytes) or len(peer_public_key) != PUBLIC_KEY_BYTES:
            raise ProtocolInputError("an X25519 public key is 32 bytes")
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(peer_public_key))
        except (ValueError, UnsupportedAlgorithm):
            raise ProtocolInputError("invalid X25519 public key") from None
        if shared == _ALL_ZERO:  # a low-order point: the peer contributed nothing
            raise ProtocolInputError("X25519 agreement gave the all-zero secret")
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(shared)

    def __reduce__(self):  # never pickled, never written
        raise TypeError("AgreementKey cannot be pickled")
