"""The one-run audit bound of Steinke, Nasr & Jagielski (NeurIPS 2023).

m canaries are each included in the training data independently with
probability 1/2. After one run the auditor guesses "in" or "out" for r of
them (abstaining on the rest) and gets v right. Under (eps, delta)-DP the
number of correct guesses is dominated by Binomial(r, e^eps / (1 + e^eps))
up to a delta term (their Theorem 5.2): the p-value of v is

    P[Binomial(r, q) >= v] + 2 m delta max_i (P[v - i <= Binomial(r, q) < v] / i),

q = 1 / (1 + e^-eps). The lower bound is the largest eps whose p-value is
below 1 - confidence (bisection; the p-value falls as eps grows). Its ceiling
is the bound of a perfect auditor (v = r), maximised over r.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binom

from audits.bounds.rates import check_confidence
from securediff.errors import ConfigError


def _check(m: int, r: int, v: int, delta: float) -> None:
    if not (0 <= v <= r <= m) or m < 1:
        raise ConfigError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m}), m >= 1")
    if not 0.0 <= delta < 1.0:
        raise ConfigError(f"delta must be in [0, 1), got {delta}")


def p_value(*, canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """P[>= correct right guesses] under (epsilon, delta)-DP (Steinke et al., Alg. 3 / Thm 5.2)."""
    m, r, v = int(canaries), int(guesses), int(correct)
    _check(m, r, v, delta)
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if v == 0:
        return min(tail, 1.0)
    below = binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ...
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(tail + alpha * delta * 2.0 * m, 1.0)


def epsilon_lower_bound(
    *, canaries: int, guesses: int, correct: int, delta: float, confidence: float
) -> float:
    """The largest epsilon rejected at `confidence` (0.0 when none is)."""
    p = 1.0 - check_confidence(confidence)

    def rejected(eps: float) -> bool:
        return p_value(canaries=canaries, guesses=guesses, correct=correct, epsilon=eps,
                       delta=delta) < p

    if not rejected(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while rejected(hi):
        lo, hi = hi, hi + 1.0
        if hi > 1e3:
            return math.inf
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if rejected(mid):
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9:
            break
    return lo


def ceiling(*, canaries: int, delta: float, confidence: float, max_guesses: int | None = None) -> float:
    """The bound of a perfect auditor making r <= max_guesses guesses, best r."""
    top = canaries if max_guesses is None else min(max_guesses, canaries)
    grid = np.unique(np.round(np.geomspace(1, top, num=24)).astype(int))
    return max(
        epsilon_lower_bound(canaries=canaries, guesses=int(r), correct=int(r), delta=delta,
                            confidence=confidence)
        for r in grid
    )


@dataclass(frozen=True)
class Guesses:
    """The auditor's guesses: `top` canaries called "in", `bottom` called "out"."""

    guesses: int
    correct: int
    top: int
    bottom: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def guess(*, scores: np.ndarray, included: np.ndarray, top: int, bottom: int) -> Guesses:
    """Guess "in" for the `top` highest scores and "out" for the `bottom` lowest."""
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    if scores.shape != included.shape or scores.ndim != 1:
        raise ConfigError("scores and included must be 1-D arrays of the same length")
    if top < 0 or bottom < 0 or top + bottom > scores.size:
        raise ConfigError(f"cannot guess {top} + {bottom} of {scores.size} canaries")
    order = np.argsort(scores, kind="stable")
    right = int(included[order[scores.size - top:]].sum()) if top else 0
    right += int((~included[order[:bottom]]).sum())
    return Guesses(guesses=top + bottom, correct=right, top=top, bottom=bottom)
