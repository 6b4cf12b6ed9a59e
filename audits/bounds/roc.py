"""ROC figures of an attack: AUC with a DeLong confidence interval, the ROC
curve, and TPR at a fixed FPR (null, with the reason, when the number of
non-members cannot resolve that rate). Scores: higher means "member"."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from audits.bounds.rates import check_confidence
from securediff.errors import ConfigError


def _scores(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(members, dtype=np.float64).ravel()
    n = np.asarray(nonmembers, dtype=np.float64).ravel()
    if m.size < 1 or n.size < 1:
        raise ConfigError("need at least one member and one non-member score")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(n))):
        raise ConfigError("attack scores must be finite")
    return m, n


@dataclass(frozen=True)
class AUC:
    value: float
    low: float
    high: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def auc_with_ci(*, members: np.ndarray, nonmembers: np.ndarray, confidence: float = 0.95) -> AUC:
    """Mann–Whitney AUC (ties count 1/2) and DeLong's normal interval, clipped to [0, 1]."""
    check_confidence(confidence)
    x, y = _scores(members, nonmembers)
    m, n = x.size, y.size
    both = rankdata(np.concatenate([x, y]))
    auc = (both[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    # DeLong et al. (1988) structural components via midranks (Sun & Xu 2014).
    v10 = (both[:m] - rankdata(x)) / n  # per member: fraction of non-members below it
    v01 = 1.0 - (both[m:] - rankdata(y)) / m  # per non-member: fraction of members above it
    var = (np.var(v10, ddof=1) / m if m > 1 else 0.0) + (np.var(v01, ddof=1) / n if n > 1 else 0.0)
    z = float(norm.isf((1.0 - confidence) / 2.0))
    half = z * float(np.sqrt(var))
    return AUC(float(auc), max(0.0, float(auc) - half), min(1.0, float(auc) + half), confidence)


def roc_curve(*, members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) over every distinct threshold, "member" when score >= threshold,
    from (0, 0) to (1, 1)."""
    x, y = _scores(members, nonmembers)
    thresholds = np.unique(np.concatenate([x, y]))[::-1]
    xs, ys = np.sort(x), np.sort(y)
    tpr = (x.size - np.searchsorted(xs, thresholds, side="left")) / x.size
    fpr = (y.size - np.searchsorted(ys, thresholds, side="left")) / y.size
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


@dataclass(frozen=True)
class RateAt:
    """TPR at a target FPR; `value` is None when it cannot be measured, `reason` says why."""

    fpr: float
    value: float | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tpr_at_fpr(*, members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> RateAt:
    """The largest TPR of a threshold whose empirical FPR is <= `fpr`."""
    x, y = _scores(members, nonmembers)
    if not 0.0 < fpr < 1.0:
        raise ConfigError(f"fpr must be in (0, 1), got {fpr}")
    if fpr < 1.0 / y.size:
        return RateAt(fpr, None, f"{y.size} non-members resolve false positive rates down to "
                                 f"1/{y.size} = {1.0 / y.size:.3g} only, above {fpr:g}")
    fprs, tprs = roc_curve(members=x, nonmembers=y)
    return RateAt(fpr, float(tprs[fprs <= fpr].max()))
