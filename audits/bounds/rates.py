"""Clopper–Pearson intervals and the epsilon a pair of error rates certifies.

A test that calls "member" when its score reaches a threshold has a false
positive rate FPR (non-members called members) and a false negative rate FNR.
An (eps, delta)-DP mechanism forces FNR >= 1 - delta - e^eps FPR (and the
same with the rates swapped), so observed rates give
eps >= max(ln((1 - delta - FNR) / FPR), ln((1 - delta - FPR) / FNR)).
The rates are only estimated, so each is replaced by its one-sided
Clopper–Pearson upper bound; the two bounds share the error budget
1 - confidence (half each), and a search over `tests` thresholds divides it
again (Bonferroni). The result then holds with probability >= confidence.

Every bound has a ceiling: the value it would take if the test made no error
at all. With N trials per side it is about ln(N / 3.7) at 95%: no experiment
of that size can certify more, whatever the mechanism.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

from securediff.errors import ConfigError


def check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    return float(confidence)


def _check_counts(successes: np.ndarray, trials: np.ndarray) -> None:
    if np.any(trials < 1) or np.any(successes < 0) or np.any(successes > trials):
        raise ConfigError("counts need 0 <= successes <= trials and trials >= 1")


def cp_upper(*, successes: int | np.ndarray, trials: int | np.ndarray, alpha: float) -> np.ndarray:
    """One-sided upper Clopper–Pearson bound: P[rate <= bound] >= 1 - alpha."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    _check_counts(k, n)
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    full = k >= n
    with np.errstate(invalid="ignore"):
        hi = beta.ppf(1.0 - alpha, k + 1.0, np.where(full, 1.0, n - k))
    return np.where(full, 1.0, hi)


def cp_lower(*, successes: int | np.ndarray, trials: int | np.ndarray, alpha: float) -> np.ndarray:
    """One-sided lower Clopper–Pearson bound: P[rate >= bound] >= 1 - alpha."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    _check_counts(k, n)
    with np.errstate(invalid="ignore"):
        lo = beta.ppf(alpha, np.where(k > 0, k, 1.0), n - k + 1.0)
    return np.where(k > 0, lo, 0.0)


def clopper_pearson(*, successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Two-sided interval at `confidence` (each tail (1 - confidence) / 2)."""
    alpha = (1.0 - check_confidence(confidence)) / 2.0
    lo = cp_lower(successes=successes, trials=trials, alpha=alpha)
    hi = cp_upper(successes=successes, trials=trials, alpha=alpha)
    return float(lo), float(hi)


def epsilon_of_rates(fpr: np.ndarray, fnr: np.ndarray, *, delta: float) -> np.ndarray:
    """max(ln((1 - delta - FNR)/FPR), ln((1 - delta - FPR)/FNR), 0), elementwise."""
    fpr = np.asarray(fpr, dtype=np.float64)
    fnr = np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.clip(1.0 - delta - fnr, 0.0, None) / fpr)
        b = np.log(np.clip(1.0 - delta - fpr, 0.0, None) / fnr)
    out = np.fmax(np.nan_to_num(a, nan=0.0, neginf=0.0), np.nan_to_num(b, nan=0.0, neginf=0.0))
    return np.maximum(out, 0.0)


def epsilon_from_counts(
    *,
    false_positives: int | np.ndarray,
    negatives: int,
    false_negatives: int | np.ndarray,
    positives: int,
    delta: float,
    confidence: float,
    tests: int = 1,
) -> np.ndarray:
    """The epsilon lower bound that holds with probability >= confidence
    simultaneously over `tests` thresholds (elementwise over the counts)."""
    check_confidence(confidence)
    if not 0.0 <= delta < 1.0:
        raise ConfigError(f"delta must be in [0, 1), got {delta}")
    if tests < 1:
        raise ConfigError(f"tests must be >= 1, got {tests}")
    alpha = (1.0 - confidence) / (2.0 * tests)
    fpr = cp_upper(successes=false_positives, trials=negatives, alpha=alpha)
    fnr = cp_upper(successes=false_negatives, trials=positives, alpha=alpha)
    return epsilon_of_rates(fpr, fnr, delta=delta)


def epsilon_ceiling(
    *, negatives: int, positives: int, delta: float, confidence: float, tests: int = 1
) -> float:
    """The largest bound these trial counts could ever certify (a test with no error)."""
    return float(
        epsilon_from_counts(false_positives=0, negatives=negatives, false_negatives=0,
                            positives=positives, delta=delta, confidence=confidence, tests=tests)
    )
