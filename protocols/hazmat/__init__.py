"""Primitives under the protocols: use them through a protocol or the transcript,
not directly (pyca/cryptography's hazmat convention). Outside this package no
module touches the `cryptography` backend (tests/protocols/test_hazmat_boundary.py)."""

from protocols.hazmat.aead import AeadError, open_sealed, seal
from protocols.hazmat.chacha import chacha20_stream, standard_normal, uniforms
from protocols.hazmat.kdf import hkdf_sha256, hkdf_sha384
from protocols.hazmat.kex import AgreementKey
from protocols.hazmat.prg import (
    RING_BITS,
    SEED_BYTES,
    add_mask,
    prg_bytes,
    prg_stream,
    reduce_ring,
    ring_dtype,
    ring_elements,
)
from protocols.hazmat.quantize import (
    FixedPoint,
    QuantizationError,
    Ring,
    error_bound,
    plan_ring,
    quantize,
)
from protocols.hazmat.shamir import (
    PRIME,
    SHARE_BYTES,
    ShamirError,
    reconstruct,
    reconstruct_many,
    split,
)
from protocols.hazmat.signing import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    SigningKey,
    verify_signature,
)

__all__ = [
    "PRIME",
    "PUBLIC_KEY_BYTES",
    "RING_BITS",
    "SEED_BYTES",
    "SHARE_BYTES",
    "SIGNATURE_BYTES",
    "AeadError",
    "AgreementKey",
    "FixedPoint",
    "QuantizationError",
    "Ring",
    "ShamirError",
    "SigningKey",
    "add_mask",
    "chacha20_stream",
    "error_bound",
    "hkdf_sha256",
    "hkdf_sha384",
    "open_sealed",
    "plan_ring",
    "prg_bytes",
    "prg_stream",
    "quantize",
    "reconstruct",
    "reconstruct_many",
    "reduce_ring",
    "ring_dtype",
    "ring_elements",
    "seal",
    "split",
    "standard_normal",
    "uniforms",
    "verify_signature",
]
