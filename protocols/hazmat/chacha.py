"""ChaCha20 keystreams (RFC 8439) and the Gaussian sampler built on them.

One construction for every float draw a privacy claim rests on: the DP noise of
`securediff.rng`, the CKKS flooding noise, a Flower node's protocol randomness.
A uniform takes the top 53 bits of a little-endian 64-bit keystream word,
u = (k + 1) / 2^53 in (0, 1], so log(u) is finite; a normal is Box-Muller on
two blocks of such uniforms (the first half of the draws gives the radii, the
second the angles, and both the cosine and the sine branch are used). Like every
floating-point sampler it has the low-order-bit weakness described by Mironov
(CCS 2012); the discrete samplers of distributed DP avoid it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from protocols.errors import ProtocolInputError

KEY_BYTES = 32
NONCE_BYTES = 12
RandomBytes = Callable[[int], bytes]


def chacha20_stream(key: bytes, *, nonce: bytes = bytes(NONCE_BYTES), counter: int = 0) -> RandomBytes:
    """The keystream of (`key`, `nonce`) from block `counter` on, as a
    `random_bytes(n)` callable: each call continues where the last one stopped."""
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ProtocolInputError("a ChaCha20 key is 32 bytes")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise ProtocolInputError("a ChaCha20 nonce is 12 bytes")
    if type(counter) is not int or not 0 <= counter < 1 << 32:
        raise ProtocolInputError("a ChaCha20 block counter is a 32-bit unsigned integer")
    # `cryptography` takes the RFC 8439 state's last four words as one 16-byte
    # value: the 32-bit block counter (little-endian), then the 96-bit nonce.
    full_nonce = counter.to_bytes(4, "little") + nonce
    encryptor = Cipher(algorithms.ChaCha20(key, full_nonce), mode=None).encryptor()

    def random_bytes(n: int) -> bytes:
        count = operator.index(n)  # numpy integers too: callers compute sizes with numpy
        if count < 0:
            raise ProtocolInputError(f"cannot draw {n!r} keystream bytes")
        return encryptor.update(bytes(count))

    return random_bytes


def uniforms(random_bytes: RandomBytes, n: int) -> np.ndarray:
    """`n` float64 uniforms in (0, 1] from 8 bytes each: 53 bits, never zero."""
    words = np.frombuffer(random_bytes(8 * n), dtype="<u8") >> np.uint64(11)
    return (words.astype(np.float64) + 1.0) * 2.0**-53


def standard_normal(random_bytes: RandomBytes, n: int) -> np.ndarray:
    """`n` iid N(0, 1) float64 draws by Box-Muller (16 bytes per pair)."""
    half = (n + 1) // 2
    u1 = uniforms(random_bytes, half)
    u2 = uniforms(random_bytes, half)
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * math.pi * u2
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]
