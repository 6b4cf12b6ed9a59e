"""Sealed enclave state: AES-256-GCM under HKDF(platform secret, measurement).

Only the same code (same measurement) on the same platform derives the key, so
state sealed by one build of the aggregator does not unseal under a changed one
(the MRENCLAVE sealing policy). The aggregator host keeps only sealed blobs; the
associated data names what the blob is, so blobs cannot be swapped between uses.
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.hazmat.aead import NONCE_BYTES, AeadError, open_sealed, seal
from protocols.tee.errors import UnsealError

_DOMAIN = b"securediff/tee/sealed-state/v1\n"


class Sealer:
    """Seals and unseals with the key of one (platform, measurement) pair."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, plaintext: bytes, *, label: bytes, random_bytes: Callable[[int], bytes]) -> bytes:
        return seal(self._key, plaintext, associated_data=_DOMAIN + label,
                    nonce=random_bytes(NONCE_BYTES))

    def unseal(self, sealed: bytes, *, label: bytes) -> bytes:
        try:
            return open_sealed(self._key, sealed, associated_data=_DOMAIN + label)
        except AeadError:
            raise UnsealError(
                "sealed state does not open: other code (measurement), other platform, "
                "or a tampered blob"
            ) from None

    def __reduce__(self) -> object:
        raise TypeError("sealing keys cannot be pickled")
