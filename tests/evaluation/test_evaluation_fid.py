from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from securediff.errors import DataError
from securediff.evaluation.fid import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    trace_sqrt_product,
)


def _spd(rng: np.random.Generator, d: int, *, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d + 2))
    return a @ a.T / a.shape[1]


def _reference_fid(mu1, s1, mu2, s2) -> float:
    """The pytorch-fid formula through scipy's sqrtm, for well-conditioned inputs."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-6)
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_pinned_diagonal_closed_form():
    # ||(3, 4)||^2 + (1 + 9 - 2*3) + (4 + 16 - 2*8) = 25 + 4 + 4
    value = frechet_distance(
        np.zeros(2), np.diag([1.0, 4.0]), np.array([3.0, 4.0]), np.diag([9.0, 16.0])
    )
    assert value == pytest.approx(33.0, rel=1e-12)


def test_random_diagonal_gaussians_match_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    s1, s2 = rng.uniform(0.1, 3.0, 16), rng.uniform(0.1, 3.0, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(
        expected, rel=1e-10
    )


def test_commuting_covariances_in_a_rotated_basis():
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    a, b = rng.uniform(0.1, 2.0, 8), rng.uniform(0.1, 2.0, 8)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(np.zeros(8), s1, np.zeros(8), s2) == pytest.approx(expected, rel=1e-9)


def test_matches_the_sqrtm_reference_on_general_covariances():
    rng = np.random.default_rng(3)
    for d in (1, 5, 32):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _spd(rng, d), _spd(rng, d)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
            _reference_fid(mu1, s1, mu2, s2), rel=1e-8
        )


def test_trace_sqrt_product_of_a_matrix_with_itself_is_its_trace():
    s = _spd(np.random.default_rng(4), 12)
    assert trace_sqrt_product(s, s) == pytest.approx(np.trace(s), rel=1e-12)


def test_same_features_give_zero():
    x = np.random.default_rng(5).normal(size=(500, 64))
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-9)


def test_fewer_samples_than_dimensions_stays_finite_and_exact():
    # Singular covariances: a pure shift of the same samples moves FID by ||d||^2 exactly.
    rng = np.random.default_rng(6)
    x = rng.normal(size=(10, 64))
    d = rng.normal(size=64)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
    assert fid_from_features(x, x + d) == pytest.approx(float(d @ d), rel=1e-9)


def test_grows_with_mean_shift():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    shifts = [0.0, 0.5, 1.0, 2.0, 4.0]
    values = [fid_from_features(a, b + s) for s in shifts]
    assert all(v1 < v2 for v1, v2 in zip(values, values[1:], strict=False))
    # Independent samples of one Gaussian: small but not zero.
    assert 0.0 < values[0] < 0.5


def test_sample_fid_approaches_the_population_value():
    rng = np.random.default_rng(8)
    n = 40_000
    a = rng.normal(size=(n, 3)) * np.array([1.0, 2.0, 0.5])
    b = rng.normal(size=(n, 3)) * np.array([2.0, 2.0, 1.0]) + np.array([1.0, 0.0, 0.0])
    # 1 + (1 - 2)^2 + 0 + (0.5 - 1)^2
    assert fid_from_features(a, b) == pytest.approx(2.25, rel=0.03)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 10))
def test_symmetric(seed: int, d: int):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _spd(rng, d, rank=max(1, d - 2)), _spd(rng, d)
    forward = frechet_distance(mu1, s1, mu2, s2)
    backward = frechet_distance(mu2, s2, mu1, s1)
    assert forward >= 0.0
    assert forward == pytest.approx(backward, rel=1e-7, abs=1e-9)


def test_fewer_than_two_samples_is_nan():
    x = np.zeros((5, 4))
    assert math.isnan(fid_from_features(x[:1], x))
    assert math.isnan(fid_from_features(x, x[:0]))


def test_rejects_bad_inputs():
    with pytest.raises(DataError):
        fid_from_features(np.zeros((5, 4)), np.zeros((5, 3)))
    with pytest.raises(DataError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(DataError, match="semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(DataError, match="symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(DataError, match="finite"):
        feature_statistics(np.array([[0.0, np.nan], [1.0, 1.0]]))
