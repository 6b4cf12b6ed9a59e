"""Memorization of released samples.

- Nearest neighbours: for each released sample, the L2 distance to its nearest
  member against its nearest holdout record, with the two reference sets
  size-matched (a random subset of the larger), so that without memorization
  a sample is closer to a member half of the time. A one-sided binomial test
  says how surprising the observed share is.
- Near copies, in the spirit of Carlini et al. (USENIX Security 2023): a
  sample is a near copy of its nearest record when that distance is at most
  `ratio` (1/3) of its mean distance to its `neighbours` nearest records;
  counted against members and, as a control, against the holdout.
- Generate-and-filter extraction: keep only samples that the model produces
  repeatedly (at least `cluster_size` - 1 other samples are near copies of
  them), then count how many of those are near copies of a member.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binom

from audits.bounds.rates import clopper_pearson
from securediff.errors import ConfigError


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L2 distances between the rows of a (n, d) and b (m, d)."""
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def near_copies(dist: np.ndarray, *, ratio: float, neighbours: int) -> np.ndarray:
    """Per row: is its nearest column within `ratio` of its mean distance to the
    `neighbours` nearest columns?"""
    k = min(neighbours, dist.shape[1])
    nearest = np.sort(dist, axis=1)[:, :k]
    return nearest[:, 0] <= ratio * nearest.mean(axis=1)


@dataclass(frozen=True)
class MemorizationReport:
    samples: int
    reference_size: int
    closer_to_member: int
    closer_to_member_fraction: float
    fraction_low: float
    fraction_high: float
    p_value: float
    median_distance_ratio: float
    near_copies_of_members: int
    near_copies_of_holdout: int
    near_copies_of_all_members: int
    filtered_candidates: int
    extracted: int
    ratio: float
    neighbours: int
    cluster_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def memorization_report(
    *, samples: np.ndarray, members: np.ndarray, holdout: np.ndarray, rng: np.random.Generator,
    confidence: float = 0.95, ratio: float = 1.0 / 3.0, neighbours: int = 50, cluster_size: int = 3,
) -> MemorizationReport:
    if samples.shape[0] < 1 or members.shape[0] < 2 or holdout.shape[0] < 2:
        raise ConfigError("memorization needs samples and at least 2 members and 2 holdout records")
    size = min(members.shape[0], holdout.shape[0])
    mem = members[np.sort(rng.permutation(members.shape[0])[:size])]
    hold = holdout[np.sort(rng.permutation(holdout.shape[0])[:size])]
    d_mem, d_hold = pairwise(samples, mem), pairwise(samples, hold)
    closer = d_mem.min(1) < d_hold.min(1)
    n, k = int(samples.shape[0]), int(closer.sum())
    lo, hi = clopper_pearson(successes=k, trials=n, confidence=confidence)
    d_all = pairwise(samples, members)
    copies_all = near_copies(d_all, ratio=ratio, neighbours=neighbours)
    d_self = pairwise(samples, samples)
    np.fill_diagonal(d_self, np.inf)
    if n > 1:
        finite = np.where(np.isfinite(d_self), d_self, np.nan)
        scale = np.nanmean(np.sort(finite, axis=1)[:, :min(neighbours, n - 1)], axis=1)
        repeated = (d_self <= ratio * scale[:, None]).sum(1) >= cluster_size - 1
    else:
        repeated = np.zeros(n, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = d_mem.min(1) / d_hold.min(1)
    return MemorizationReport(
        samples=n, reference_size=size, closer_to_member=k, closer_to_member_fraction=k / n,
        fraction_low=lo, fraction_high=hi, p_value=float(binom.sf(k - 1, n, 0.5)),
        median_distance_ratio=float(np.nanmedian(ratios)),
        near_copies_of_members=int(near_copies(d_mem, ratio=ratio, neighbours=neighbours).sum()),
        near_copies_of_holdout=int(near_copies(d_hold, ratio=ratio, neighbours=neighbours).sum()),
        near_copies_of_all_members=int(copies_all.sum()),
        filtered_candidates=int(repeated.sum()), extracted=int((repeated & copies_all).sum()),
        ratio=ratio, neighbours=neighbours, cluster_size=cluster_size,
    )
