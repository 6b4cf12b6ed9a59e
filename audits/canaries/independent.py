"""The rates bound of a white-box audit whose canaries are independent trials.

A Dirac canary's observation (its own coordinate of every noisy step) depends
only on whether it was included, on its own Poisson draws and on the noise
at its own coordinate; nothing else in the run touches it. So the m canaries
are m independent trials of the mechanism (included ones against excluded
ones), and the classical hypothesis-test bound of `audits.bounds.rates`
holds for them: eps >= ln((1 - delta - FNR) / FPR) with Clopper–Pearson
rates, over thresholds fixed before the run from the claimed mechanism alone
and paid for by Bonferroni. Its ceiling grows as ln(m), where the one-run
bound's delta term (2 m delta) caps it: it flags mechanisms that separate
canaries well but not perfectly (per-copy clipping, an understated sample
rate), which the one-run bound cannot at any m.

A black-box audit scores every canary on one final model: those scores are
not independent, and only the one-run bound applies there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from audits.bounds.thresholds import EpsilonBound, bonferroni_from_counts, counts_at
from securediff.errors import ConfigError

THRESHOLDS = 16


def claimed_thresholds(*, excluded_scores: Callable[[int], np.ndarray], canaries: int,
                       count: int = THRESHOLDS) -> np.ndarray:
    """Score thresholds whose false positive rates under the claimed mechanism run
    from 0.45 down to about 1 / (the expected number of excluded canaries), from a
    simulation of excluded canaries' scores (`excluded_scores(n)`: n such scores)."""
    if canaries < 2 or count < 1:
        raise ConfigError("need at least 2 canaries and 1 threshold")
    negatives = canaries / 2.0
    draws = max(100_000, int(50 * negatives))
    simulated = np.sort(np.asarray(excluded_scores(draws), dtype=np.float64))
    rates = np.geomspace(0.45, 1.0 / negatives, num=count)
    return np.quantile(simulated, 1.0 - rates)


def rates_bound(*, scores: np.ndarray, included: np.ndarray, thresholds: np.ndarray,
                delta: float, confidence: float) -> EpsilonBound:
    """Bonferroni over the fixed thresholds: "in" when a canary's score reaches one."""
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    if not included.any() or included.all():
        raise ConfigError("need both included and excluded canaries")
    fp, fn = counts_at(scores[included], scores[~included], thresholds=thresholds)
    return bonferroni_from_counts(false_positives=fp, false_negatives=fn, thresholds=thresholds,
                                  negatives=int((~included).sum()), positives=int(included.sum()),
                                  delta=delta, confidence=confidence)
