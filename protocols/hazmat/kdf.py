"""HKDF (RFC 5869) over SHA-256 and SHA-384.

SHA-256 derives the protocols' pairwise keys (`kex.AgreementKey.derive`); the
simulated TEE derives its sealing keys with SHA-384, as SGX's key hierarchy
would with its 384-bit secrets.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def hkdf_sha256(ikm: bytes, *, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hkdf_sha384(ikm: bytes, *, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA384(), length=length, salt=salt, info=info).derive(ikm)
