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
    """`n` iid N(0, 1) float64 draws by Box-Muller (16 bytes per pair).

    The logarithm, cosine and sine are computed from +, -, *, / and sqrt alone
    (`log_unit`, `cos_sin_turns`), which IEEE 754 rounds the same way in every
    SIMD width: numpy's own np.log / np.cos / np.sin take different code paths on
    AVX2 and AVX-512 machines and differ in the last bit, which made a seeded
    (insecure test mode) run draw different noise on different CPUs."""
    half = (n + 1) // 2
    u1 = uniforms(random_bytes, half)
    u2 = uniforms(random_bytes, half)
    radius = np.sqrt(-2.0 * log_unit(u1))
    cos, sin = cos_sin_turns(u2)
    return np.concatenate([radius * cos, radius * sin])[:n]


_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that e * _LN2_HI is exact for |e| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_SQRT_HALF = math.sqrt(0.5)
# 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...); |s| <= 0.1716 below, so s^2 <= 0.0295
# and 12 terms leave a truncation error under 1e-19.
_ATANH_TERMS = tuple(1.0 / (2 * k + 1) for k in range(12))


def _poly(z: np.ndarray, terms: tuple[float, ...]) -> np.ndarray:
    """Horner: terms[0] + terms[1] z + terms[2] z^2 + ..."""
    out = np.full_like(z, terms[-1])
    for c in reversed(terms[:-1]):
        out = out * z + c
    return out


def log_unit(u: np.ndarray) -> np.ndarray:
    """Natural log of positive float64 values (within a few ulp of np.log), from
    frexp and a series: bit for bit the same on every CPU numpy runs on."""
    m, e = np.frexp(u)  # u = m 2^e, m in [0.5, 1): exact
    low = m < _SQRT_HALF
    m = np.where(low, 2.0 * m, m)  # m in [sqrt(1/2), sqrt(2)): exact
    e = (e - low).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    return e * _LN2_HI + (e * _LN2_LO + 2.0 * s * _poly(z, _ATANH_TERMS))


_TWO_PI_HI = 6.28318530717958623200e+00  # 2 pi = _TWO_PI_HI + _TWO_PI_LO
_TWO_PI_LO = 2.44929359829470635445e-16
# Taylor terms of sin and cos on |phi| <= pi/4: the first left out is below 1e-18.
_SIN_TERMS = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(10))
_COS_TERMS = tuple((-1) ** k / math.factorial(2 * k) for k in range(11))


def cos_sin_turns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi x for float64 x (turns), within a few ulp of numpy's,
    from +, -, * alone: bit for bit the same on every CPU numpy runs on."""
    quarter = np.round(4.0 * x)  # the nearest quarter turn (4x and the rounding are exact)
    r = x - 0.25 * quarter  # |r| <= 1/8 turn; exact for the uniforms' 53-bit grid
    phi = r * _TWO_PI_HI + r * _TWO_PI_LO  # |phi| <= pi / 4
    z = phi * phi
    sin_phi = phi * _poly(z, _SIN_TERMS)
    cos_phi = _poly(z, _COS_TERMS)
    # Turn back by q quarter turns: (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c)
    # for q = 0, 1, 2, 3 (a swap and signs, so exact).
    q = np.mod(quarter, 4.0)
    odd = (q == 1.0) | (q == 3.0)
    cos = np.where(odd, sin_phi, cos_phi) * np.where((q == 1.0) | (q == 2.0), -1.0, 1.0)
    sin = np.where(odd, cos_phi, sin_phi) * np.where(q >= 2.0, -1.0, 1.0)
    return cos, sin
