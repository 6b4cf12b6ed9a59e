import numpy as np

from securediff.rng import RandomSource


def test_insecure_streams_repeat_and_private_ones_do_not():
    a = RandomSource.insecure_from_seed(3).child("x").uniform(4)
    b = RandomSource.insecure_from_seed(3).child("x").uniform(4)
    assert np.array_equal(a, b) and not RandomSource.insecure_from_seed(3).private
    p, q = RandomSource.from_os(), RandomSource.from_os()
    assert p.private and not np.array_equal(p.uniform(4), q.uniform(4))
    assert "key" not in repr(p).lower()


def test_children_are_independent_streams():
    root = RandomSource.insecure_from_seed(0)
    assert not np.array_equal(root.child("a").uniform(8), root.child("b").uniform(8))


def test_distributions():
    src = RandomSource.insecure_from_seed(1)
    z = src.normal_np(200_000)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    u = src.uniform(100_000)
    assert u.min() > 0 and u.max() <= 1
    counts = np.bincount(src.integers(7, 70_000), minlength=7)
    assert counts.min() > 9_500 and counts.max() < 10_500
    assert abs(src.bernoulli(0.3, 100_000).mean() - 0.3) < 0.01
