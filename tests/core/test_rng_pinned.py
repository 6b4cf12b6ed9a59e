"""The insecure test source is pinned: a seeded run must repeat bit for bit across
refactors of the keystream and samplers it is built on (protocols.hazmat.chacha)."""

import hashlib

from securediff.rng import RandomSource


def test_a_seeded_source_draws_the_same_bytes_uniforms_normals_and_integers():
    s = RandomSource.insecure_from_seed(5)
    drawn = (s.normal_np(1001).tobytes() + s.random_bytes(77) + s.child("x").uniform(9).tobytes()
             + s.integers(1000, 50).tobytes())
    assert hashlib.sha256(drawn).hexdigest() == (
        "2bf721abd72b6cf5fb7a9bf9d9d0b5dbf0626e250dcabb26e3e2e0c1dd985aa7")
