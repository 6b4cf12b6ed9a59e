"""The Gaussian-DP view of an audit (Dong, Roth & Su 2022; Nasr et al. 2023).

A mu-GDP mechanism has the trade-off curve FNR = Phi(Phi^-1(1 - FPR) - mu):
any test's rates satisfy mu >= Phi^-1(1 - FPR) - Phi^-1(FNR). With the rates
replaced by their Clopper–Pearson upper bounds this is a lower bound on mu
(at the stated confidence). It refutes a claim that the mechanism is the
Gaussian mechanism the accountant analysed (which is what the forward noise
and full-batch DP-SGD are) more sharply than the (eps, delta) bound does,
because it uses the whole curve and not only its tangent at delta; the
epsilon it maps to is reported beside the (eps, delta) bound, never instead.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from audits.bounds.rates import check_confidence, cp_upper
from securediff.errors import ConfigError
from securediff.privacy.accountants import gaussian_epsilon


def mu_of_rates(fpr: np.ndarray, fnr: np.ndarray) -> np.ndarray:
    """Phi^-1(1 - FPR) - Phi^-1(FNR), floored at 0 (elementwise)."""
    return np.maximum(norm.isf(np.asarray(fpr, float)) - norm.ppf(np.asarray(fnr, float)), 0.0)


def mu_lower_bound(
    *,
    false_positives: int | np.ndarray,
    negatives: int,
    false_negatives: int | np.ndarray,
    positives: int,
    confidence: float,
    tests: int = 1,
) -> np.ndarray:
    """mu >= this with probability >= confidence, simultaneously over `tests` thresholds."""
    check_confidence(confidence)
    if tests < 1:
        raise ConfigError(f"tests must be >= 1, got {tests}")
    alpha = (1.0 - confidence) / (2.0 * tests)
    fpr = cp_upper(successes=false_positives, trials=negatives, alpha=alpha)
    fnr = cp_upper(successes=false_negatives, trials=positives, alpha=alpha)
    return mu_of_rates(fpr, fnr)


def epsilon_of_mu(*, mu: float, delta: float) -> float:
    """Epsilon at delta of the mu-GDP (Gaussian) mechanism (Balle & Wang 2018)."""
    return gaussian_epsilon(mu=float(mu), delta=delta)


def mu_of_epsilon(*, epsilon: float, delta: float) -> float:
    """The mu whose Gaussian mechanism has exactly `epsilon` at `delta` (bisection)."""
    if not (epsilon > 0.0 and math.isfinite(epsilon)):
        raise ConfigError(f"epsilon must be positive and finite, got {epsilon}")
    lo, hi = 0.0, 1.0
    while gaussian_epsilon(mu=hi, delta=delta) < epsilon:
        lo, hi = hi, 2.0 * hi
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if gaussian_epsilon(mu=mid, delta=delta) < epsilon:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
