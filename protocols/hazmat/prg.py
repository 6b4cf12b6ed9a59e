"""A pseudo-random generator over the full 256-bit seed: AES-256-CTR (low level).

The seed is the AES-256 key itself, so every one of its 256 bits matters (no
folding into 32 bits, no numpy RandomState). A `nonce` names the purpose of a
stream: the 16-byte CTR block is the first 8 bytes of SHA-256(domain || nonce)
followed by a 64-bit block counter starting at zero, so two purposes under one
seed never share keystream (a stream is at most 2^64 blocks long).

Ring elements of Z_(2^bits) are read straight from the keystream as
little-endian unsigned integers of the smallest numpy width holding `bits` and
reduced with a bit mask. Since 2^bits divides 2^width, every element is exactly
uniform: there is no modulo bias. Everything is vectorised: one OpenSSL call
per stream, one numpy view, no per-element Python loop.
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


def ring_elements(seed: bytes, *, count: int, bits: int, nonce: bytes = b"") -> np.ndarray:
    """`count` independent uniform elements of Z_(2^bits), as a fresh writable array."""
    dtype = ring_dtype(bits)
    if type(count) is not int or count < 0:
        raise ProtocolInputError(f"cannot draw {count!r} ring elements")
    out = np.frombuffer(
        bytearray(prg_bytes(seed, count * dtype.itemsize, nonce=nonce)), dtype=dtype
    )
    if bits != 8 * dtype.itemsize:
        np.bitwise_and(out, dtype.type(ring_mask(bits)), out=out)
    return out


def add_mask(
    acc: np.ndarray, seed: bytes, *, bits: int, nonce: bytes = b"", subtract: bool = False
) -> None:
    """acc <- acc +/- PRG(seed) in Z_(2^bits), in place.

    The keystream is added at full width; reduction mod 2^bits is left to the
    caller (reducing once at the end gives the same result, since 2^bits divides
    the width's modulus), which saves one pass per mask.
    """
    dtype = ring_dtype(bits)
    if acc.dtype != dtype or acc.ndim != 1 or not acc.flags.writeable:
        raise ProtocolInputError(f"the accumulator must be a writable 1-D {dtype} array")
    stream = np.frombuffer(prg_bytes(seed, acc.size * dtype.itemsize, nonce=nonce), dtype=dtype)
    if subtract:
        np.subtract(acc, stream, out=acc)
    else:
        np.add(acc, stream, out=acc)


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
