"""Fréchet distance between Gaussians fitted to evaluator features (FID).

FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2).

The reference implementation (pytorch-fid) takes `scipy.linalg.sqrtm` of the
non-symmetric product S1 S2, then drops imaginary round-off and retries with
eps*I added when the root is not finite. That path fails exactly where we
need it: a minority class has fewer samples than the 64 feature dimensions,
so its covariance is singular. Only the trace of the root is needed, and
tr((S1 S2)^1/2) = sum of sqrt(eigenvalues of S1^1/2 S2 S1^1/2), a symmetric
PSD matrix whose eigenvalues `eigh` computes stably: no imaginary parts to
drop and no eps to add. The tests check it against the sqrtm path.
"""

from __future__ import annotations

import math

import numpy as np

from securediff.errors import DataError


def _as_psd(sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric PSD matrix, with round-off negatives set to 0."""
    scale = max(float(np.max(np.abs(sigma))), 1e-300)
    if not np.allclose(sigma, sigma.T, rtol=0.0, atol=1e-8 * scale):
        raise DataError(f"{name} is not symmetric")
    w, v = np.linalg.eigh((sigma + sigma.T) / 2.0)
    if w.size and w.min() < -1e-8 * max(float(np.abs(w).max()), 1e-300):
        raise DataError(f"{name} is not positive semi-definite (smallest eigenvalue {w.min():.3g})")
    return _drop_round_off(w), v


def _drop_round_off(w: np.ndarray) -> np.ndarray:
    """Zero the eigenvalues that are round-off (the matrix-rank cut-off of numpy):
    a square root turns 1e-16 into 1e-8, which summed over a singular
    covariance's null space would shift FID by about 1e-6."""
    cutoff = (float(w.max()) if w.size else 0.0) * w.size * np.finfo(np.float64).eps
    return np.where(w > cutoff, w, 0.0)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 @ sigma2)^1/2) for symmetric PSD matrices, via the symmetric form."""
    w1, v1 = _as_psd(sigma1, "sigma1")
    root1 = (v1 * np.sqrt(w1)) @ v1.T
    _as_psd(sigma2, "sigma2")
    inner = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sum(np.sqrt(_drop_round_off(eig))))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    m1, m2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise DataError(
            f"shape mismatch: mu1 {m1.shape}, mu2 {m2.shape}, sigma1 {s1.shape}, sigma2 {s2.shape}"
        )
    if not all(np.isfinite(a).all() for a in (m1, m2, s1, s2)):
        raise DataError("means and covariances must be finite")
    diff = m1 - m2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    # A squared distance; anything below zero is round-off.
    return max(value, 0.0)


def feature_statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of (N, D) features, N >= 2."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(f"need (N, D) features with N >= 2, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise DataError("features contain non-finite values")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two (N, D) feature sets; `math.nan` when either has fewer than 2 rows.

    FID is biased upward for small sets (the covariance estimate is noisy and,
    below D samples, singular), so values from few samples are not comparable
    with values from many: report them with their sample counts.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise DataError(f"feature sets must be (N, D) with equal D, got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        return math.nan
    mu_a, sigma_a = feature_statistics(a)
    mu_b, sigma_b = feature_statistics(b)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
