"""AES-256-GCM sealing for messages relayed through the aggregator.

`seal` prepends a 96-bit nonce, fresh from the OS unless the caller injects
one (a protocol that draws all its randomness from an injected source, so a
seeded test round repeats byte for byte; the caller then owns uniqueness: each
key of theirs seals one message, or the nonces come from a cryptographic
stream). The associated data binds the ciphertext to its context (protocol,
round, stage, sender, receiver), so a ciphertext replayed into another context
fails to open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocols.errors import ProtocolError

NONCE_BYTES = 12
TAG_BYTES = 16


class AeadError(ProtocolError, ValueError):
    """A sealed message that does not open under this key and context."""


def seal(
    key: bytes, plaintext: bytes, *, associated_data: bytes, nonce: bytes | None = None
) -> bytes:
    """nonce || AES-256-GCM(key, nonce, plaintext, associated_data) || tag."""
    if len(key) != 32:
        raise AeadError("AES-256-GCM needs a 32-byte key")
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    elif not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise AeadError("an AES-GCM nonce is 12 bytes")
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, sealed: bytes, *, associated_data: bytes) -> bytes:
    if len(key) != 32:
        raise AeadError("AES-256-GCM needs a 32-byte key")
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise AeadError("sealed message too short")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
    except InvalidTag:
        raise AeadError("sealed message does not open under this key and context") from None
