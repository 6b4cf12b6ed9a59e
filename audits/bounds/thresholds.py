"""Honest threshold choice for an epsilon lower bound from attack scores.

Picking the threshold that looks best on the very scores it is evaluated on
overstates the bound. Two honest ways, both here:

- `heldout_bound`: choose the threshold on a selection split (the attack's
  reference records), evaluate it once on the evaluated split;
- `bonferroni_bound`: evaluate K thresholds fixed before the data were seen
  (e.g. from the claimed mechanism alone) and pay for the search by running
  each at confidence 1 - (1 - confidence) / K.

Each returns the (eps, delta) bound, its ceiling, and the Gaussian-DP mu
bound of the same threshold(s). The mu bound holds for any mechanism; the
epsilon it maps to (`epsilon_gdp`) is the epsilon of a Gaussian curve, true
only where the audited mechanism's privacy curve is Gaussian
(`gaussian_curve`). For other mechanisms it can exceed the true epsilon with
no sampling error (randomized response at epsilon 1 maps to 5.58), so it is
left out of their reports.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from audits.bounds.gdp import epsilon_of_mu, mu_lower_bound
from audits.bounds.rates import epsilon_ceiling, epsilon_from_counts
from securediff.errors import ConfigError


@dataclass(frozen=True)
class EpsilonBound:
    epsilon_lower_bound: float
    ceiling: float
    confidence: float
    delta: float
    method: str
    threshold: float | None
    false_positives: int
    negatives: int
    false_negatives: int
    positives: int
    mu_lower_bound: float  # Gaussian-DP view at the same threshold(s)
    mu_ceiling: float
    epsilon_gdp: float  # epsilon at delta of the mu-GDP mechanism with mu = mu_lower_bound
    gaussian_curve: bool = False  # the claimed mechanism's privacy curve is Gaussian

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.gaussian_curve:
            del out["epsilon_gdp"]  # a Gaussian-curve reading, wrong for this mechanism
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in out.items()}


def counts_at(
    members: np.ndarray, nonmembers: np.ndarray, *, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(false positives, false negatives) of "member iff score >= threshold"."""
    ms = np.sort(np.asarray(members, dtype=np.float64).ravel())
    ns = np.sort(np.asarray(nonmembers, dtype=np.float64).ravel())
    t = np.asarray(thresholds, dtype=np.float64)
    fp = ns.size - np.searchsorted(ns, t, side="left")
    fn = np.searchsorted(ms, t, side="left")
    return fp, fn


def _bound(fp: np.ndarray, fn: np.ndarray, *, negatives: int, positives: int, delta: float,
           confidence: float, tests: int) -> tuple[np.ndarray, np.ndarray]:
    kw = dict(negatives=negatives, positives=positives, confidence=confidence, tests=tests)
    eps = epsilon_from_counts(false_positives=fp, false_negatives=fn, delta=delta, **kw)
    mu = mu_lower_bound(false_positives=fp, false_negatives=fn, **kw)
    return eps, mu


def _result(*, eps: float, mu: float, fp: int, fn: int, negatives: int, positives: int,
            delta: float, confidence: float, tests: int, method: str,
            threshold: float | None, gaussian_curve: bool) -> EpsilonBound:
    kw = dict(negatives=negatives, positives=positives, confidence=confidence, tests=tests)
    mu_ceiling = float(mu_lower_bound(false_positives=0, false_negatives=0, **kw))
    return EpsilonBound(
        epsilon_lower_bound=float(eps), ceiling=epsilon_ceiling(delta=delta, **kw),
        confidence=confidence, delta=delta, method=method, threshold=threshold,
        false_positives=int(fp), negatives=negatives, false_negatives=int(fn), positives=positives,
        mu_lower_bound=float(mu), mu_ceiling=mu_ceiling,
        epsilon_gdp=epsilon_of_mu(mu=float(mu), delta=delta) if delta > 0 else math.inf,
        gaussian_curve=gaussian_curve,
    )


def heldout_bound(
    *,
    select_members: np.ndarray,
    select_nonmembers: np.ndarray,
    eval_members: np.ndarray,
    eval_nonmembers: np.ndarray,
    delta: float,
    confidence: float,
    gaussian_curve: bool = False,
) -> EpsilonBound:
    """Threshold chosen on the selection split, bound computed on the evaluated split."""
    sm, sn = np.asarray(select_members, float).ravel(), np.asarray(select_nonmembers, float).ravel()
    em, en = np.asarray(eval_members, float).ravel(), np.asarray(eval_nonmembers, float).ravel()
    if min(sm.size, sn.size, em.size, en.size) < 1:
        raise ConfigError("both splits need members and non-members")
    candidates = np.unique(np.concatenate([sm, sn]))
    fp, fn = counts_at(sm, sn, thresholds=candidates)
    eps, mu = _bound(fp, fn, negatives=sn.size, positives=sm.size, delta=delta,
                     confidence=confidence, tests=1)
    # Best selection bound; among ties the most separating mu, then the lowest threshold.
    best = int(np.lexsort((candidates, -mu, -eps))[0])
    threshold = float(candidates[best])
    efp, efn = counts_at(em, en, thresholds=np.array([threshold]))
    e_eps, e_mu = _bound(efp, efn, negatives=en.size, positives=em.size, delta=delta,
                         confidence=confidence, tests=1)
    return _result(eps=float(e_eps[0]), mu=float(e_mu[0]), fp=int(efp[0]), fn=int(efn[0]),
                   negatives=en.size, positives=em.size, delta=delta, confidence=confidence,
                   tests=1, method="held-out threshold", threshold=threshold,
                   gaussian_curve=gaussian_curve)


def bonferroni_from_counts(
    *,
    false_positives: np.ndarray,
    false_negatives: np.ndarray,
    thresholds: np.ndarray,
    negatives: int,
    positives: int,
    delta: float,
    confidence: float,
    gaussian_curve: bool = False,
) -> EpsilonBound:
    """K fixed thresholds' counts in, the best bound valid over all K out."""
    fp = np.asarray(false_positives)
    fn = np.asarray(false_negatives)
    k = int(fp.size)
    if k < 1 or fn.size != k or np.asarray(thresholds).size != k:
        raise ConfigError("need one false-positive and false-negative count per threshold")
    eps, mu = _bound(fp, fn, negatives=negatives, positives=positives, delta=delta,
                     confidence=confidence, tests=k)
    i = int(np.lexsort((-mu, -eps))[0])
    return _result(eps=float(eps.max()), mu=float(mu.max()), fp=int(fp[i]), fn=int(fn[i]),
                   negatives=negatives, positives=positives, delta=delta, confidence=confidence,
                   tests=k, method=f"bonferroni over {k} fixed thresholds",
                   threshold=float(np.asarray(thresholds)[i]), gaussian_curve=gaussian_curve)


def bonferroni_bound(
    *,
    members: np.ndarray,
    nonmembers: np.ndarray,
    thresholds: np.ndarray,
    delta: float,
    confidence: float,
    gaussian_curve: bool = False,
) -> EpsilonBound:
    """Thresholds fixed in advance; every one evaluated, the search paid for by Bonferroni."""
    m = np.asarray(members, float).ravel()
    n = np.asarray(nonmembers, float).ravel()
    if m.size < 1 or n.size < 1:
        raise ConfigError("need members and non-members")
    fp, fn = counts_at(m, n, thresholds=thresholds)
    return bonferroni_from_counts(false_positives=fp, false_negatives=fn, thresholds=thresholds,
                                  negatives=n.size, positives=m.size, delta=delta,
                                  confidence=confidence, gaussian_curve=gaussian_curve)
