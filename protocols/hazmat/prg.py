"""A pseudo-random generator over the full 256-bit seed: AES-256-CTR (low level).

The seed is the AES-256 key itself, so every one of its 256 bits matters (no
folding into 32 bits, no numpy RandomState). A `nonce` names the purpose of a
stream: the 16-byte CTR block is the first 8 bytes of SHA-256(domain || nonce)
followed by a 64-bit block counter starting at zero, so two purposes under one
seed never share keystream (a stream is at most 2^64 blocks long).

Ring elements of Z_(2^bits) are read straight from the keystream as
little-endian unsigned integers of the smallest numpy width holding `bits` and
reduced with a bit mask. Since 2^bits divides 2^width, every element is exactly
uniform: there is no modulo bias.

Speed (docs/performance.md, benchmarks/mask_prg.py): the keystream is written
by OpenSSL straight into numpy memory (`update_into`), never through an
intermediate `bytes` object, and masks are generated and added in chunks of
`CHUNK_BYTES` that stay in the CPU cache, so adding a mask to an accumulator
costs one pass over the accumulator and no allocation of the mask's size.
No per-element Python loop; one Python iteration per chunk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.errors import ProtocolInputError

SEED_BYTES = 32
RING_BITS = (8, 16, 24, 32, 40, 48, 56, 64)
_DOMAIN = b"securediff/prg/v1/aes-256-ctr\n"
_MAX_BYTES = 1 << 40
# 256 KiB: large enough that the per-chunk Python overhead is negligible, small
# enough that the keystream chunk is still in L2 when numpy adds it.
CHUNK_BYTES = 1 << 18
_ZEROS = bytes(CHUNK_BYTES)  # CTR keystream = AES-CTR encryption of zeros


def _cipher(seed: bytes, nonce: bytes):
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise ProtocolInputError("a PRG seed is exactly 32 bytes")
    block = hashlib.sha256(_DOMAIN + bytes(nonce)).digest()[:8] + bytes(8)
    return Cipher(algorithms.AES(seed), modes.CTR(block)).encryptor()


def prg_bytes(seed: bytes, n: int, *, nonce: bytes = b"") -> bytes:
    """The first `n` bytes of the keystream of (`seed`, `nonce`)."""
    if type(n) is not int or not 0 <= n <= _MAX_BYTES:
        raise ProtocolInputError(f"cannot draw {n!r} PRG bytes")
    return _cipher(seed, nonce).update(bytes(n))


def prg_stream(seed: bytes, *, nonce: bytes = b"") -> Callable[[int], bytes]:
    """The keystream of (`seed`, `nonce`) as a `random_bytes(n)` callable: each
    call continues where the last one stopped."""
    encryptor = _cipher(seed, nonce)

    def random_bytes(n: int) -> bytes:
        if type(n) is not int or not 0 <= n <= _MAX_BYTES:
            raise ProtocolInputError(f"cannot draw {n!r} PRG bytes")
        return encryptor.update(bytes(n))

    return random_bytes


def ring_dtype(bits: int) -> np.dtype:
    """The little-endian unsigned numpy type that holds elements of Z_(2^bits)."""
    if bits not in RING_BITS:
        raise ProtocolInputError(f"ring width must be one of {RING_BITS}, got {bits!r}")
    width = 8 if bits <= 8 else 16 if bits <= 16 else 32 if bits <= 32 else 64
    return np.dtype(f"<u{width // 8}")


def ring_mask(bits: int) -> int:
    return (1 << bits) - 1


def _keystream_into(encryptor, out: np.ndarray) -> None:
    """Overwrite the bytes of contiguous `out` with the next keystream bytes."""
    raw = out.reshape(-1).view(np.uint8)
    for start in range(0, raw.size, CHUNK_BYTES):
        part = raw[start : start + CHUNK_BYTES]
        encryptor.update_into(_ZEROS[: part.size], part)


def ring_elements(seed: bytes, *, count: int, bits: int, nonce: bytes = b"") -> np.ndarray:
    """`count` independent uniform elements of Z_(2^bits), as a fresh writable array."""
    dtype = ring_dtype(bits)
    if type(count) is not int or count < 0:
        raise ProtocolInputError(f"cannot draw {count!r} ring elements")
    if count * dtype.itemsize > _MAX_BYTES:
        raise ProtocolInputError(f"cannot draw {count!r} ring elements")
    out = np.empty(count, dtype=dtype)
    _keystream_into(_cipher(seed, nonce), out)
    return reduce_ring(out, bits=bits)


def add_mask(
    acc: np.ndarray, seed: bytes, *, bits: int, nonce: bytes = b"", subtract: bool = False
) -> None:
    """acc <- acc +/- PRG(seed) in Z_(2^bits), in place.

    The keystream is added at full width; reduction mod 2^bits is left to the
    caller (reducing once at the end gives the same result, since 2^bits divides
    the width's modulus), which saves one pass per mask. The mask is made chunk
    by chunk in a small scratch buffer, never as a whole.
    """
    dtype = ring_dtype(bits)
    if acc.dtype != dtype or acc.ndim != 1 or not acc.flags.writeable:
        raise ProtocolInputError(f"the accumulator must be a writable 1-D {dtype} array")
    if acc.size * dtype.itemsize > _MAX_BYTES:
        raise ProtocolInputError("the accumulator is longer than one PRG stream")
    encryptor = _cipher(seed, nonce)
    op = np.subtract if subtract else np.add
    step = CHUNK_BYTES // dtype.itemsize
    scratch = np.empty(min(step, acc.size), dtype=dtype)
    scratch_bytes = scratch.view(np.uint8)
    for start in range(0, acc.size, step):
        part = acc[start : start + step]
        stream = scratch[: part.size]
        encryptor.update_into(_ZEROS[: part.size * dtype.itemsize],
                              scratch_bytes[: part.size * dtype.itemsize])
        op(part, stream, out=part)


def reduce_ring(acc: np.ndarray, *, bits: int) -> np.ndarray:
    """Reduce a full-width accumulator to Z_(2^bits) in place and return it."""
    dtype = ring_dtype(bits)
    if bits != 8 * dtype.itemsize:
        np.bitwise_and(acc, dtype.type(ring_mask(bits)), out=acc)
    return acc


def unit_uniforms(random_bytes, count: int) -> np.ndarray:
    """`count` uniforms k / 2^32 in [0, 1) from 4 bytes each of `random_bytes`."""
    raw = np.frombuffer(random_bytes(4 * count), dtype="<u4")
    return raw * (1.0 / 4294967296.0)
