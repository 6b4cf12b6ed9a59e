"""X25519 key agreement with HKDF-SHA256 (RFC 7748, RFC 5869).

Private keys come from OpenSSL's OS-seeded generator, or from 32 raw bytes of
an injected source (`from_private_bytes`: secagg derives its round keys from a
seed, and a protocol with injected randomness repeats byte for byte); they stay
in memory and are never exported. The caller binds every derived key to its context (protocol, round, stage, the two
parties) through `info`, so a key recovered in one round or stage opens
nothing in another.
"""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocols.errors import ProtocolInputError
from protocols.hazmat.kdf import hkdf_sha256

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32
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

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> AgreementKey:
        """The key whose RFC 7748 scalar is `raw` (32 bytes; X25519 clamps it)."""
        if not isinstance(raw, bytes) or len(raw) != PRIVATE_KEY_BYTES:
            raise ProtocolInputError("an X25519 private key is 32 bytes")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def exchange(self, peer_public_key: bytes) -> bytes:
        """The raw X25519 shared secret with `peer_public_key` (RFC 7748); refuses a
        low-order point. Feed it to a KDF, never use it as a key: see `derive`."""
        if not isinstance(peer_public_key, bytes) or len(peer_public_key) != PUBLIC_KEY_BYTES:
            raise ProtocolInputError("an X25519 public key is 32 bytes")
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(peer_public_key))
        except (ValueError, UnsupportedAlgorithm):
            raise ProtocolInputError("invalid X25519 public key") from None
        if shared == _ALL_ZERO:  # a low-order point: the peer contributed nothing
            raise ProtocolInputError("X25519 agreement gave the all-zero secret")
        return shared

    def derive(self, peer_public_key: bytes, *, info: bytes, length: int = 32) -> bytes:
        """HKDF-SHA256 over the X25519 shared secret with `peer_public_key`."""
        return hkdf_sha256(self.exchange(peer_public_key), info=info, length=length)

    def __reduce__(self):  # never pickled, never written
        raise TypeError("AgreementKey cannot be pickled")
