"""Post-processing of a statistics release (securediff.privacy.stats_release):
per-class means, a pooled within-class covariance projected to PSD, and draws of
class-conditional Gaussian samples from them. Nothing here reads the data: it
costs no privacy. Randomness comes only from an injected generator.

Decoding, in feature units (the released vector is in units of the clip norm C):
the means are C S_k / (w_s n_k), with n_k the public counts; the pooled second
moment M = C^2 svec^-1(.) / w_m; the within-class covariance is
(M - sum_k n_k mu_k mu_k^T) / N, its eigenvalues clipped at `min_eigenvalue`.
With a moment projection P (r x d, orthonormal rows) the covariance is
P^T Sigma_r P + s (I - P^T P), where Sigma_r is the above in the r-dim space and s
the within-class energy outside P per remaining dimension:
(rho - sum_k n_k ||(I - P^T P) mu_k||^2) / (N (d - r)), clipped at `min_eigenvalue`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from securediff.errors import ConfigError
from securediff.privacy.stats_release import StatsLayout, svec_inverse

__all__ = ["ReleasedStats", "decode", "draw_samples", "split_release"]


@dataclass(frozen=True, eq=False)
class ReleasedStats:
    """Per-class sums and means (K, d), the pooled second moment of the released
    space (r, r), the energy outside the moment projection (0.0 without one), and
    the PSD within-class covariance (d, d), all in feature units."""

    sums: np.ndarray
    means: np.ndarray
    second_moment: np.ndarray
    residual_energy: float
    covariance: np.ndarray
    counts: np.ndarray


def split_release(vector: np.ndarray, layout: StatsLayout) -> tuple[np.ndarray, np.ndarray, float]:
    """(per-class sums (K, d), second moment (r, r), residual energy), feature units."""
    v = np.asarray(vector, dtype=np.float64)
    if v.shape != (layout.size,):
        raise ConfigError(f"the release has length {layout.size}, got {v.shape}")
    c = layout.clip_norm
    sums = v[: layout.sums_size].reshape(layout.num_classes, layout.dim) * (c / layout.sum_weight)
    moment = v[layout.sums_size:] * (c * c / layout.moment_weight)
    r = layout.moment_dim
    packed = r * (r + 1) // 2
    residual = float(moment[packed]) if layout.moment_projection is not None else 0.0
    return sums, svec_inverse(moment[:packed], r), residual


def _psd(a: np.ndarray, floor: float) -> np.ndarray:
    sym = (a + a.T) / 2.0
    w, v = np.linalg.eigh(sym)
    return (v * np.maximum(w, floor)) @ v.T


def decode(vector: np.ndarray, layout: StatsLayout, counts: np.ndarray, *,
           min_eigenvalue: float = 0.0) -> ReleasedStats:
    """The statistics of a (noisy) release over records with public per-class
    `counts` (K,). A class without records gets a zero mean."""
    n = np.asarray(counts)
    if n.shape != (layout.num_classes,) or n.dtype.kind not in "iu" or (n < 0).any():
        raise ConfigError(f"counts must be {layout.num_classes} non-negative integers")
    if not min_eigenvalue >= 0.0:
        raise ConfigError(f"min_eigenvalue must be >= 0, got {min_eigenvalue}")
    total = int(n.sum())
    if total < 1:
        raise ConfigError("the release holds no records")
    sums, moment, residual = split_release(vector, layout)
    means = np.divide(sums, np.maximum(n, 1)[:, None])
    p = layout.moment_projection
    pm = means if p is None else means @ p.T
    within = (moment - (pm.T * n) @ pm) / total
    if p is None:
        covariance = _psd(within, min_eigenvalue)
    else:
        outside = float(np.sum(n * (np.sum(means * means, axis=1) - np.sum(pm * pm, axis=1))))
        rest = layout.dim - p.shape[0]
        per_dim = max((residual - outside) / (total * rest), min_eigenvalue) if rest else 0.0
        covariance = p.T @ _psd(within, min_eigenvalue) @ p + per_dim * (np.eye(layout.dim) - p.T @ p)
    return ReleasedStats(sums=sums, means=means, second_moment=moment, residual_energy=residual,
                         covariance=covariance, counts=n.astype(np.int64))


def draw_samples(stats: ReleasedStats, labels: np.ndarray, *,
                 generator: np.random.Generator | torch.Generator) -> np.ndarray:
    """One draw of N(mean of class y, covariance) per entry y of `labels`, (n, d)
    float64. Standard normals come from `generator` only (numpy or torch), never
    from global state, so the same generator state gives the same draws."""
    y = np.asarray(labels)
    k, d = stats.means.shape
    if y.ndim != 1 or y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= k)):
        raise ConfigError(f"labels must be a 1-D integer array in [0, {k})")
    if isinstance(generator, np.random.Generator):
        z = generator.standard_normal((y.size, d))
    elif isinstance(generator, torch.Generator):
        z = torch.randn((y.size, d), generator=generator, dtype=torch.float64).numpy()
    else:
        raise ConfigError(f"generator must be a numpy or torch Generator, got {type(generator).__name__}")
    w, v = np.linalg.eigh(stats.covariance)
    root = v * np.sqrt(np.maximum(w, 0.0))  # root @ root.T == covariance (PSD)
    return stats.means[y] + z @ root.T
