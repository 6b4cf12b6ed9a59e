"""Fixed-point encoding: the ring is the smallest that cannot wrap, worst-case sums
are exact, stochastic rounding is unbiased and within the stated bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.hazmat.prg import prg_stream
from protocols.hazmat.quantize import (
    FixedPoint,
    QuantizationError,
    Ring,
    decode,
    encode,
    encode_weight,
    error_bound,
    from_ring,
    plan_ring,
    quantize,
    to_ring,
)

FP = FixedPoint(clip_range=2.0, value_bits=16, max_weight=100.0, weight_frac_bits=2)


def _rb(label: bytes = b"q"):
    return prg_stream(b"\x05" * 32, nonce=label)


def test_the_ring_is_the_smallest_multiple_of_8_bits_that_holds_the_worst_sum() -> None:
    # n * Omega * Q = 10 * 400 * 32767 = 131,068,000 -> 27 bits + sign = 28 -> 32
    assert plan_ring(fixed=FP, n=10, length=1000).bits == 32
    # 1,000 clients: 13,106,800,000 -> 34 bits + sign -> 40
    assert plan_ring(fixed=FP, n=1000, length=1000).bits == 40
    # the clipped-count coordinate can dominate: n * m
    assert plan_ring(fixed=FP, n=2, length=10**12).bits == 48
    big = FixedPoint(clip_range=1.0, value_bits=48, max_weight=2.0**20, weight_frac_bits=0)
    with pytest.raises(QuantizationError, match="ring"):
        plan_ring(fixed=big, n=2, length=10)


@pytest.mark.parametrize("sign", [1, -1])
def test_worst_case_sums_do_not_wrap(sign: int) -> None:
    n, m = 10, 50
    ring = plan_ring(fixed=FP, n=n, length=m)
    omega = encode_weight(100.0, fixed=FP)
    q = np.full(m, sign * FP.levels, dtype=np.int64)
    total = np.zeros(m + 2, dtype=ring.dtype)
    for _ in range(n):
        total += encode(q, omega=omega, clipped=m, ring=ring)
    total &= ring.dtype.type(ring.mask)
    out = decode(total, fixed=FP, ring=ring, integer=True, n=n)
    assert out.total_weight == 1000.0 and out.clipped == n * m
    assert np.all(out.weighted_sum == sign * n * 100.0 * FP.levels)


def test_one_more_client_than_planned_is_caught_on_decode() -> None:
    ring = plan_ring(fixed=FP, n=2, length=4)
    enc = encode(np.full(4, FP.levels, np.int64), omega=FP.max_omega, clipped=0, ring=ring)
    total = (enc.astype(object) * 3) % (1 << ring.bits)
    with pytest.raises(QuantizationError, match="out of range"):
        decode(np.array(total, dtype=ring.dtype), fixed=FP, ring=ring, integer=True, n=2)


@pytest.mark.parametrize("bits", [8, 16, 24, 32, 40, 56, 64])
def test_ring_round_trip_of_signed_values(bits: int) -> None:
    ring = Ring(bits=bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    values = np.array([lo, lo + 1, -1, 0, 1, hi], dtype=np.int64)
    elements = to_ring(values, ring=ring)
    assert elements.dtype == ring.dtype and int(elements.max()) <= ring.mask
    assert int(elements[2]) == ring.mask  # -1 is 2^bits - 1
    assert np.array_equal(from_ring(elements, ring=ring), values)


def test_stochastic_rounding_is_unbiased() -> None:
    fixed = FixedPoint(clip_range=1.0, value_bits=4, max_weight=1.0, weight_frac_bits=0)
    x = np.full(200_000, 0.3)  # y = 0.3 * 7 = 2.1: q is 2 w.p. 0.9, 3 w.p. 0.1
    q, clipped = quantize(x, fixed=fixed, random_bytes=_rb())
    assert clipped == 0 and set(np.unique(q)) == {2, 3}
    mean = float(q.mean())
    assert abs(mean - 2.1) < 4 * math.sqrt(0.09 / 200_000)


def test_clipping_is_counted_and_integers_are_exact() -> None:
    q, clipped = quantize(np.array([-5.0, -2.0, 0.0, 1.0, 2.5]), fixed=FP, random_bytes=_rb())
    assert clipped == 2 and q[0] == -FP.levels and q[-1] == FP.levels
    ints = np.array([-(2**20), 3, 2**15, 40_000], dtype=np.int64)
    q, clipped = quantize(ints, fixed=FP, random_bytes=_rb())
    assert clipped == 3 and list(q) == [-FP.levels, 3, FP.levels, FP.levels]  # 2^15 > Q


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    m=st.integers(1, 40),
    bits=st.integers(3, 40),
    clip=st.floats(0.01, 100.0),
    seed=st.integers(0, 2**31),
)
def test_the_weighted_sum_is_within_the_stated_bound(n, m, bits, clip, seed) -> None:
    fixed = FixedPoint(clip_range=clip, value_bits=bits, max_weight=64.0, weight_frac_bits=3)
    ring = plan_ring(fixed=fixed, n=n, length=m)
    gen = np.random.default_rng(seed)
    xs = gen.normal(scale=clip, size=(n, m))
    weights = gen.integers(0, 64 * 8 + 1, size=n) / 8.0
    total = np.zeros(m + 2, dtype=ring.dtype)
    for i in range(n):
        q, clipped = quantize(xs[i], fixed=fixed, random_bytes=_rb(seed.to_bytes(8, "big") +
                                                                   bytes([i])))
        total += encode(q, omega=encode_weight(weights[i], fixed=fixed), clipped=clipped,
                        ring=ring)
    total &= ring.dtype.type(ring.mask)
    out = decode(total, fixed=fixed, ring=ring, integer=False, n=n)
    exact = weights @ np.clip(xs, -clip, clip)
    assert out.total_weight == weights.sum()
    assert out.clipped == int(np.count_nonzero(np.abs(xs) > clip))
    bound = error_bound(total_weight=out.total_weight, fixed=fixed, integer=False)
    assert np.all(np.abs(out.weighted_sum - exact) <= bound)


def test_weights_are_carried_exactly_or_refused() -> None:
    assert encode_weight(2.75, fixed=FP) == 11
    with pytest.raises(QuantizationError, match="multiple"):
        encode_weight(0.1, fixed=FP)
    with pytest.raises(QuantizationError, match="max_weight"):
        encode_weight(101.0, fixed=FP)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(clip_range=0.0, value_bits=8, max_weight=1.0, weight_frac_bits=0),
        dict(clip_range=float("inf"), value_bits=8, max_weight=1.0, weight_frac_bits=0),
        dict(clip_range=1.0, value_bits=1, max_weight=1.0, weight_frac_bits=0),
        dict(clip_range=1.0, value_bits=49, max_weight=1.0, weight_frac_bits=0),
        dict(clip_range=1.0, value_bits=8, max_weight=0.0, weight_frac_bits=0),
        dict(clip_range=1.0, value_bits=8, max_weight=1.0, weight_frac_bits=25),
    ],
)
def test_bad_settings_are_refused(kwargs) -> None:
    with pytest.raises(QuantizationError):
        FixedPoint(**kwargs)
