"""The mask PRG: known answers, an independent AES re-derivation, the avalanche of
every seed bit (a seed folded to 32 bits could not pass it), and exact
uniformity over Z_(2^k) for widths that are not a numpy type."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.errors import ProtocolInputError
from protocols.hazmat.prg import (
    RING_BITS,
    add_mask,
    prg_bytes,
    prg_stream,
    reduce_ring,
    ring_dtype,
    ring_elements,
)

SEED = bytes(range(32))


def _independent_keystream(seed: bytes, nonce: bytes, blocks: int) -> bytes:
    """AES-256 in ECB mode over explicit counter blocks: CTR by hand."""
    prefix = hashlib.sha256(b"securediff/prg/v1/aes-256-ctr\n" + nonce).digest()[:8]
    counters = b"".join(prefix + i.to_bytes(8, "big") for i in range(blocks))
    return Cipher(algorithms.AES(seed), modes.ECB()).encryptor().update(counters)


def test_known_answers() -> None:
    assert prg_bytes(SEED, 16).hex() == "6a7eeff499a2ba341d17704ad79321d8"
    assert [int(v) for v in ring_elements(SEED, count=4, bits=32)] == [
        0xF4EF7E6A, 0x34BAA299, 0x4A70171D, 0xD82193D7,
    ]
    assert [int(v) for v in ring_elements(SEED, count=2, bits=64, nonce=b"self-mask")] == [
        0xC06E60BFC0FFC715, 0xEBD682F6F1BFD974,
    ]


@pytest.mark.parametrize("nonce", [b"", b"self-mask", b"pairwise-mask"])
def test_matches_aes_ctr_computed_by_hand(nonce: bytes) -> None:
    expected = _independent_keystream(SEED, nonce, 40)
    assert prg_bytes(SEED, 640, nonce=nonce) == expected
    values = ring_elements(SEED, count=80, bits=64, nonce=nonce)
    assert values.tobytes() == expected


def test_every_seed_bit_flips_about_half_the_mask_bits() -> None:
    base = np.unpackbits(ring_elements(SEED, count=512, bits=32).view(np.uint8))
    fractions = []
    for bit in range(256):
        flipped = bytearray(SEED)
        flipped[bit // 8] ^= 1 << (bit % 8)
        other = np.unpackbits(ring_elements(bytes(flipped), count=512, bits=32).view(np.uint8))
        fractions.append(float(np.mean(base != other)))
    # 16384 output bits: a fair coin lands within 0.5 +/- 0.03 with overwhelming probability.
    assert min(fractions) > 0.47 and max(fractions) < 0.53


@pytest.mark.parametrize("bits", [24, 40, 48, 56])
def test_odd_widths_are_exactly_uniform_masks_of_the_keystream(bits: int) -> None:
    values = ring_elements(SEED, count=20_000, bits=bits)
    assert values.dtype == ring_dtype(bits) and int(values.max()) < 1 << bits
    raw = np.frombuffer(prg_bytes(SEED, 20_000 * values.itemsize), dtype=values.dtype)
    assert np.array_equal(values, raw & values.dtype.type((1 << bits) - 1))
    top = (values >> values.dtype.type(bits - 4)).astype(np.int64)  # the 4 highest ring bits
    counts = np.bincount(top, minlength=16)
    chi2 = float(((counts - 1250.0) ** 2 / 1250.0).sum())
    assert chi2 < 45.0  # 15 degrees of freedom: p < 1e-4 for a correct generator


def test_add_mask_and_subtract_mask_cancel_in_every_ring() -> None:
    for bits in RING_BITS:
        dtype = ring_dtype(bits)
        start = ring_elements(b"\x07" * 32, count=1000, bits=bits)
        acc = start.copy()
        add_mask(acc, SEED, bits=bits, nonce=b"x")
        reduce_ring(acc, bits=bits)
        expected = (start.astype(object) + ring_elements(SEED, count=1000, bits=bits, nonce=b"x")
                    .astype(object)) % (1 << bits)
        assert [int(v) for v in acc] == list(expected)
        add_mask(acc, SEED, bits=bits, nonce=b"x", subtract=True)
        assert np.array_equal(reduce_ring(acc, bits=bits), start) and acc.dtype == dtype


def test_nonces_separate_streams_and_streams_continue() -> None:
    assert prg_bytes(SEED, 64, nonce=b"a") != prg_bytes(SEED, 64, nonce=b"b")
    take = prg_stream(SEED, nonce=b"a")
    assert take(10) + take(54) == prg_bytes(SEED, 64, nonce=b"a")


@pytest.mark.parametrize("seed", [b"", b"\x00" * 16, b"\x00" * 33, "0" * 32])
def test_only_full_256_bit_seeds_are_accepted(seed) -> None:
    with pytest.raises(ProtocolInputError):
        prg_bytes(seed, 8)


def test_bad_widths_and_counts_are_refused() -> None:
    with pytest.raises(ProtocolInputError):
        ring_elements(SEED, count=4, bits=12)
    with pytest.raises(ProtocolInputError):
        ring_elements(SEED, count=-1, bits=32)
    with pytest.raises(ProtocolInputError):
        add_mask(np.zeros(4, dtype=np.uint64), SEED, bits=32)
