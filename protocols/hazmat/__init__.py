"""Primitives under the protocols: use them through a protocol or the transcript,
not directly (pyca/cryptography's hazmat convention)."""

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
    "FixedPoint",
    "QuantizationError",
    "Ring",
    "ShamirError",
    "SigningKey",
    "add_mask",
    "error_bound",
    "plan_ring",
    "prg_bytes",
    "prg_stream",
    "quantize",
    "reconstruct",
    "reconstruct_many",
    "reduce_ring",
    "ring_dtype",
    "ring_elements",
    "split",
    "verify_signature",
]
