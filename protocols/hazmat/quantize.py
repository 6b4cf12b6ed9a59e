"""Fixed-point encoding of weighted vectors into Z_(2^k) that cannot wrap (low level).

A client's float coordinate x is clipped to [-R, R] and scaled to
y = x * Q / R with Q = 2^(b-1) - 1, then rounded stochastically:
q = floor(y + u) with u uniform in [0, 1) (32 bits from the caller's
`random_bytes`), so E[q] = y up to 2^-32 and |q| <= Q. Integer inputs are
clipped to [-Q, Q] and kept as they are. The weight w travels as the integer
omega = w * 2^f (f = `weight_frac_bits`; a weight that is not a multiple of
2^-f, or above `max_weight`, is refused rather than silently changed), and the
client encodes [omega * q_1, ..., omega * q_m, omega, clipped count].

`plan_ring` picks the ring Z_(2^k), k a multiple of 8 up to 64, from the
number of clients n, the vector length and the bounds above, such that the sum
of any n such encodings, read as a two's-complement k-bit integer, is the
exact integer sum: n * Omega * Q, n * Omega and n * m all stay below 2^(k-1).
A configuration for which no k <= 64 is enough raises `QuantizationError`.

Error bound (`error_bound`): the released weighted sum of the clipped inputs
is off by at most (sum of weights) * R / Q per coordinate (one rounding step
per client, weighted), plus float64 rounding of the final division; the
weighted mean is therefore within one step R / Q of the mean of the clipped
inputs. Integer inputs are exact while the sum stays below 2^53 (the
float64 the aggregate is released in).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from protocols.errors import ProtocolInputError
from protocols.hazmat.prg import RING_BITS, ring_dtype, ring_mask, unit_uniforms

EXTRA_COORDINATES = 2  # the weight and the count of clipped values ride behind the vector


class QuantizationError(ProtocolInputError):
    """A quantization setting under which a sum could wrap, or a value it cannot encode."""


@dataclass(frozen=True)
class FixedPoint:
    """The public encoding parameters every party of a round agrees on."""

    clip_range: float
    value_bits: int
    max_weight: float
    weight_frac_bits: int

    def __post_init__(self) -> None:
        if not (isinstance(self.clip_range, int | float) and math.isfinite(self.clip_range)):
            raise QuantizationError("clip_range must be a finite number")
        if self.clip_range <= 0:
            raise QuantizationError("clip_range must be > 0")
        if type(self.value_bits) is not int or not 2 <= self.value_bits <= 48:
            raise QuantizationError("value_bits must be an int in [2, 48]")
        if not (isinstance(self.max_weight, int | float) and 0 < self.max_weight < 2.0**40):
            raise QuantizationError("max_weight must be a number in (0, 2^40)")
        if type(self.weight_frac_bits) is not int or not 0 <= self.weight_frac_bits <= 24:
            raise QuantizationError("weight_frac_bits must be an int in [0, 24]")

    @property
    def levels(self) -> int:
        """Q: the largest |q| of one quantized coordinate."""
        return (1 << (self.value_bits - 1)) - 1

    @property
    def max_omega(self) -> int:
        """The largest encoded weight, max_weight * 2^f rounded down."""
        return math.floor(self.max_weight * (1 << self.weight_frac_bits))

    def scale(self, integer: bool) -> float:
        return 1.0 if integer else self.levels / float(self.clip_range)

    def step(self, integer: bool) -> float:
        """One rounding step in input units (0 for integer inputs: they are exact)."""
        return 0.0 if integer else float(self.clip_range) / self.levels


@dataclass(frozen=True)
class Ring:
    """Z_(2^bits), carried in the numpy type `dtype` and `bits // 8` bytes on the wire."""

    bits: int

    @property
    def dtype(self) -> np.dtype:
        return ring_dtype(self.bits)

    @property
    def mask(self) -> int:
        return ring_mask(self.bits)

    @property
    def wire_bytes(self) -> int:
        return self.bits // 8


def plan_ring(*, fixed: FixedPoint, n: int, length: int) -> Ring:
    """The smallest ring in which n encodings of `length` coordinates sum without wrapping."""
    if type(n) is not int or n < 1 or type(length) is not int or length < 0:
        raise QuantizationError("the ring needs n >= 1 clients and a length >= 0")
    largest = max(n * fixed.max_omega * fixed.levels, n * fixed.max_omega, n * length, 1)
    need = largest.bit_length() + 1  # sign bit: values live in [-2^(k-1), 2^(k-1))
    for bits in RING_BITS:
        if bits >= need:
            return Ring(bits=bits)
    raise QuantizationError(
        f"sums of {n} clients need a {need}-bit ring (max 64): lower value_bits "
        f"({fixed.value_bits}), max_weight ({fixed.max_weight}) or weight_frac_bits"
    )


def encode_weight(weight: float, *, fixed: FixedPoint) -> int:
    """omega = weight * 2^f exactly, or `QuantizationError`."""
    if weight > fixed.max_weight:
        raise QuantizationError(f"weight {weight} exceeds max_weight {fixed.max_weight}")
    omega = weight * (1 << fixed.weight_frac_bits)
    if not float(omega).is_integer():
        raise QuantizationError(
            f"weight {weight} is not a multiple of 2^-{fixed.weight_frac_bits}; "
            "raise weight_frac_bits to carry it exactly"
        )
    return int(omega)


def quantize(
    values: np.ndarray, *, fixed: FixedPoint, random_bytes: Callable[[int], bytes]
) -> tuple[np.ndarray, int]:
    """Clip and round `values` to int64 in [-Q, Q]; returns them and the clipped count.

    Floats are rounded stochastically from `random_bytes` (4 bytes a coordinate);
    integers are only clipped and draw nothing."""
    q = fixed.levels
    if values.dtype.kind in "iu":
        clipped = int(np.count_nonzero((values > q) | (values < -q)))
        return np.clip(values.astype(np.int64), -q, q), clipped
    x = values.astype(np.float64)
    r = float(fixed.clip_range)
    clipped = int(np.count_nonzero((x > r) | (x < -r)))
    np.clip(x, -r, r, out=x)
    np.multiply(x, fixed.scale(False), out=x)
    np.add(x, unit_uniforms(random_bytes, x.size), out=x)
    np.floor(x, out=x)
    np.clip(x, -q, q, out=x)  # y + u < Q + 1 already; this guards the float rounding of y
    return x.astype(np.int64), clipped


def encode(
    quantized: np.ndarray, *, omega: int, clipped: int, ring: Ring
) -> np.ndarray:
    """[omega * q, omega, clipped] as elements of the ring (two's complement)."""
    out = np.empty(quantized.size + EXTRA_COORDINATES, dtype=np.int64)
    np.multiply(quantized, omega, out=out[: quantized.size])
    out[quantized.size] = omega
    out[quantized.size + 1] = clipped
    return to_ring(out, ring=ring)


def to_ring(values: np.ndarray, *, ring: Ring) -> np.ndarray:
    """Signed int64 -> ring elements (reduction mod 2^bits of the two's complement)."""
    raw = values.astype(np.int64, copy=False).view(np.uint64)
    out = raw.astype(ring.dtype)  # C casts truncate: exactly reduction mod 2^width
    if ring.bits != 8 * ring.dtype.itemsize:
        np.bitwise_and(out, ring.dtype.type(ring.mask), out=out)
    return out


def from_ring(values: np.ndarray, *, ring: Ring) -> np.ndarray:
    """Ring elements -> signed int64 in [-2^(bits-1), 2^(bits-1)), in one or two passes."""
    width = 8 * ring.dtype.itemsize
    if ring.bits == width:  # reinterpret as the signed type of the same width
        return values.astype(ring.dtype, copy=False).view(f"<i{width // 8}").astype(np.int64)
    half = np.int64(1 << (ring.bits - 1))
    out = values.astype(np.int64)
    np.bitwise_xor(out, half, out=out)  # (v ^ 2^(k-1)) - 2^(k-1): sign-extend k bits
    np.subtract(out, half, out=out)
    return out


@dataclass(frozen=True)
class Decoded:
    """A decoded sum: the weighted sum, the total weight, and how many values were clipped."""

    weighted_sum: np.ndarray
    total_weight: float
    clipped: int


def decode(total: np.ndarray, *, fixed: FixedPoint, ring: Ring, integer: bool, n: int) -> Decoded:
    """Read a ring sum of at most `n` encodings; raise `QuantizationError` if it is
    outside what n honest encodings can sum to (the masks did not cancel)."""
    signed = from_ring(total, ring=ring)
    m = signed.size - EXTRA_COORDINATES
    if m < 0:
        raise QuantizationError("a sum shorter than its two trailing coordinates")
    omega_sum, clipped = int(signed[m]), int(signed[m + 1])
    values = signed[:m]
    bound = n * fixed.max_omega * fixed.levels
    if (
        not 0 <= omega_sum <= n * fixed.max_omega
        or not 0 <= clipped <= n * m
        or (m and max(-int(values.min()), int(values.max())) > bound)
    ):
        raise QuantizationError("the unmasked sum is out of range: the masks did not cancel")
    unit = fixed.scale(integer) * (1 << fixed.weight_frac_bits)
    return Decoded(
        weighted_sum=values.astype(np.float64) / unit,
        total_weight=omega_sum / (1 << fixed.weight_frac_bits),
        clipped=clipped,
    )


def error_bound(*, total_weight: float, fixed: FixedPoint, integer: bool) -> float:
    """Per-coordinate bound on |released weighted sum - sum_i w_i clip(x_i)|: one
    rounding step per unit of weight, plus the float64 rounding of the final
    division (integer inputs have only the latter, which is 0 below 2^53)."""
    magnitude = float(fixed.levels) if integer else float(fixed.clip_range)
    float_rounding = 2 * np.finfo(np.float64).eps * total_weight * magnitude
    return total_weight * fixed.step(integer) + float_rounding
