"""The CKKS layer under the `ckks` protocol: the aggregator's context holds no secret
key, every ciphertext gets fresh randomness, and the flooding width follows its
stated bound.

Most tests use a small context (N=4096, a 60-bit data prime, scale 2^36): the code
paths (chunking, complex packing, seeded encryption, loading, adding) are the same as
at N=8192; only precision and the room for flooding differ, and those are checked on
the default context in test_ckks_protocol.py."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from protocols.ckks import CiphertextError, CkksContext, CkksKeyError, CkksParams
from protocols.ckks.noise import gaussian
from protocols.errors import ProtocolInputError

SMALL = CkksParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 49), scale_bits=36)


def stream(seed: int):
    counter = [0]

    def random_bytes(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{counter[0]}".encode()).digest()
            counter[0] += 1
        return out[:n]

    return random_bytes


@pytest.fixture(scope="module")
def keyed() -> CkksContext:
    return CkksContext.from_key_seed(SMALL, stream(1)(64))


def test_aggregator_context_reports_no_secret_key_and_cannot_decrypt(keyed) -> None:
    public = CkksContext.public(SMALL)
    assert public.has_secret_key is False and keyed.has_secret_key is True
    a, b = np.linspace(-3, 3, 100), np.cos(np.arange(100.0))
    ct_a = keyed.encrypt(a, random_bytes=stream(2))
    ct_b = keyed.encrypt(b, random_bytes=stream(3))
    with pytest.raises(CkksKeyError):
        public.decrypt(ct_a, length=100)
    with pytest.raises(CkksKeyError):
        public.encrypt(a, random_bytes=stream(4))
    total = public.save(public.accumulate(public.load(ct_a), public.load(ct_b)))
    np.testing.assert_allclose(keyed.decrypt(total, length=100), a + b, rtol=0, atol=1e-5)


def test_the_secret_key_is_a_function_of_the_seed(keyed) -> None:
    x = np.arange(10.0)
    blobs = keyed.encrypt(x, random_bytes=stream(5))
    again = CkksContext.from_key_seed(SMALL, stream(1)(64))
    np.testing.assert_allclose(again.decrypt(blobs, length=10), x, atol=1e-5)
    other = CkksContext.from_key_seed(SMALL, stream(99)(64))
    assert np.abs(other.decrypt(blobs, length=10) - x).max() > 1.0  # another key: garbage


def test_vectors_are_chunked_and_packed_two_reals_per_slot(keyed) -> None:
    n = SMALL.reals_per_ciphertext
    assert n == 4096 and SMALL.chunks(n) == 1 and SMALL.chunks(n + 1) == 2 and SMALL.chunks(0) == 1
    x = np.random.default_rng(0).normal(size=2 * n + 17) * 50
    blobs = keyed.encrypt(x, random_bytes=stream(6))
    assert len(blobs) == 3
    np.testing.assert_allclose(keyed.decrypt(blobs, length=x.shape[0]), x, rtol=0, atol=1e-4)


def test_every_ciphertext_gets_fresh_randomness(keyed) -> None:
    n = SMALL.reals_per_ciphertext
    same = np.ones(2 * n)  # two identical chunks
    first, second = keyed.encrypt(same, random_bytes=stream(7))
    assert first != second  # a context seeded once would give the same mask twice
    assert keyed.encrypt(same, random_bytes=stream(7)) == (first, second)  # injected: reproducible
    assert keyed.encrypt(same, random_bytes=stream(8))[0] != first


def test_malformed_or_foreign_ciphertexts_are_refused(keyed) -> None:
    public = CkksContext.public(SMALL)
    (blob,) = keyed.encrypt(np.ones(3), random_bytes=stream(9))
    for bad in (b"", b"\x00" * 100, blob[:-10], bytes([blob[0] ^ 0xFF]) + blob[1:], blob * 5):
        with pytest.raises(CiphertextError):
            public.load([bad])
    other = CkksParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 49), scale_bits=30)
    with pytest.raises(CiphertextError):  # another scale
        CkksContext.public(other).load([blob])
    with pytest.raises(CiphertextError):
        public.accumulate(public.load([blob]), public.load([blob, blob]))


def test_flood_sigma_meets_its_statistical_distance_bound() -> None:
    p = CkksParams()  # the defaults: N=8192, scale 2^100, 40 bits, 2 decryptors
    for n in (2, 10, 1000):
        sigma = p.flood_sigma(n)
        tau = sigma * 2.0**100 / math.sqrt(8192 / 2)  # coefficient-domain std
        distance = math.sqrt(2 * 8192) * 21 * n / (2 * tau)  # Pinsker over 2 decryptions
        assert distance == pytest.approx(2.0**-40, rel=1e-12)
    assert p.flood_sigma(10) == pytest.approx(7.4607e-13, rel=1e-4)  # 2^-48 * 210
    assert p.max_abs == 2.0**40 and p.data_bits == 180


@pytest.mark.parametrize(
    "bad",
    [
        {"coeff_mod_bit_sizes": (60, 60, 60, 39)},  # 219 bits > 218 at N=8192
        {"poly_modulus_degree": 2048},
        {"coeff_mod_bit_sizes": (60,)},
        {"coeff_mod_bit_sizes": (61, 60)},
        {"scale_bits": 170},
        {"flood_bits": -1},
        {"decryptors": 0},
        {"coeff_mod_bit_sizes": "60,x"},
    ],
)
def test_parameters_are_validated(bad) -> None:
    with pytest.raises(ProtocolInputError):
        CkksParams(**bad)


def test_gaussian_flooding_noise_is_injected_and_normal() -> None:
    z = gaussian(200_001, sigma=3.0, random_bytes=stream(10))
    assert z.shape == (200_001,)
    assert abs(z.mean()) < 4 * 3.0 / math.sqrt(z.size)
    assert z.std() == pytest.approx(3.0, rel=0.01)
    assert np.array_equal(z, gaussian(200_001, sigma=3.0, random_bytes=stream(10)))
