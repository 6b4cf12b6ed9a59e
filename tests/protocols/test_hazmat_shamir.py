"""Shamir over GF(2^521 - 1): every t-subset rebuilds the secret, fewer do not,
and the field and encodings are what they claim."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import ProtocolInputError
from protocols.hazmat.prg import prg_stream
from protocols.hazmat.shamir import (
    PRIME,
    SHARE_BYTES,
    ShamirError,
    decode_share,
    encode_share,
    lagrange_at_zero,
    reconstruct,
    reconstruct_many,
    split,
)


def _rb(label: bytes = b"t"):
    return prg_stream(b"\x11" * 32, nonce=label)


def test_the_field_is_prime_and_large_enough() -> None:
    assert PRIME == 2**521 - 1 and PRIME > 2**256
    for base in (2, 3, 5, 7, 11, 13):  # Fermat witnesses (2^521 - 1 is a Mersenne prime)
        assert pow(base, PRIME - 1, PRIME) == 1
    assert SHARE_BYTES * 8 >= PRIME.bit_length()


def test_every_subset_of_t_shares_rebuilds_and_t_minus_1_does_not() -> None:
    secret = os.urandom(32)
    xs = [1, 2, 3, 4, 5, 6]
    (row,) = split([secret], threshold=3, xs=xs, random_bytes=_rb())
    points = list(zip(xs, row, strict=True))
    for subset in itertools.combinations(points, 3):
        assert reconstruct(subset, threshold=3) == secret
    for subset in itertools.combinations(points, 2):
        with pytest.raises(ShamirError):
            reconstruct(subset, threshold=3)


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_any_t_of_n_rebuilds(secret: bytes, n: int, data) -> None:
    t = data.draw(st.integers(min_value=1, max_value=n))
    xs = data.draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    (row,) = split([secret], threshold=t, xs=xs, random_bytes=_rb(bytes([n, t])))
    chosen = data.draw(st.permutations(list(zip(xs, row, strict=True))))[:t]
    assert reconstruct(chosen, threshold=t) == secret


def test_many_secrets_and_cached_weights() -> None:
    secrets = [os.urandom(32) for _ in range(5)]
    rows = split(secrets, threshold=4, xs=[2, 4, 6, 8, 10], random_bytes=_rb())
    sets = {f"s{i}": list(zip([2, 4, 6, 8, 10], row, strict=True))[i % 2 :] for i, row in
            enumerate(rows)}
    out = reconstruct_many(sets, threshold=4)
    assert [out[f"s{i}"] for i in range(5)] == secrets


def test_lagrange_weights_interpolate_a_known_polynomial() -> None:
    xs = [1, 5, 7, 12]
    f = lambda x: (42 + 3 * x + 5 * x * x + 11 * x**3) % PRIME  # noqa: E731
    assert sum(w * f(x) for w, x in zip(lagrange_at_zero(xs), xs, strict=True)) % PRIME == 42


def test_coefficients_are_rejection_sampled_below_the_prime() -> None:
    draws = [b"\xff" * SHARE_BYTES]  # 521 one-bits after masking: equal to p, rejected

    def random_bytes(n: int) -> bytes:
        return draws.pop(0)[:n] if draws else b"\x01" * n

    (row,) = split([b"\x00" * 32], threshold=2, xs=[1, 2], random_bytes=random_bytes)
    coefficient = int.from_bytes(b"\x01" * SHARE_BYTES, "big") & PRIME
    assert row == [coefficient, 2 * coefficient % PRIME] and not draws


def test_encodings_and_refusals() -> None:
    assert decode_share(encode_share(PRIME - 1)) == PRIME - 1
    with pytest.raises(ShamirError):
        decode_share(PRIME.to_bytes(SHARE_BYTES, "big"))
    with pytest.raises(ShamirError):
        decode_share(b"\x00" * 5)
    with pytest.raises(ShamirError):
        reconstruct([(1, 5), (1, 6)], threshold=2)
    with pytest.raises(ProtocolInputError):
        split([b"\x00" * 32], threshold=3, xs=[1, 2], random_bytes=_rb())
    with pytest.raises(ProtocolInputError):
        split([b"\x00" * 32], threshold=1, xs=[0, 2], random_bytes=_rb())
    with pytest.raises(ProtocolInputError):
        split([b"\x00" * 31], threshold=1, xs=[1], random_bytes=_rb())
    # a value that is not a 32-byte secret means the shares were not of one secret
    with pytest.raises(ShamirError):
        reconstruct([(1, PRIME - 1)], threshold=1)
