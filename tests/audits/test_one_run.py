"""The one-run bound (Steinke, Nasr & Jagielski 2023) against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audits.bounds import one_run
from audits.canaries.dpsgd import guess_rules, one_run_bound
from securediff.errors import ConfigError


def p_value_by_hand(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Their Theorem 5.2 written out with exact binomial sums (no scipy)."""
    q = 1.0 / (1.0 + math.exp(-eps))
    pmf = [math.comb(r, i) * q**i * (1 - q) ** (r - i) for i in range(r + 1)]
    tail = math.fsum(pmf[v:])
    alpha = max((math.fsum(pmf[v - i:v]) / i for i in range(1, v + 1)), default=0.0)
    return min(tail + 2.0 * m * delta * alpha, 1.0)


@pytest.mark.parametrize(("m", "r", "v", "eps", "delta"), [
    (1000, 100, 90, 1.5, 1e-5), (1000, 100, 100, 3.0, 1e-5), (200, 60, 40, 0.3, 1e-3),
    (5000, 40, 38, 2.0, 1e-6), (100, 10, 0, 1.0, 1e-5),
])
def test_p_value_matches_the_formula(m: int, r: int, v: int, eps: float, delta: float) -> None:
    got = one_run.p_value(canaries=m, guesses=r, correct=v, epsilon=eps, delta=delta)
    assert got == pytest.approx(p_value_by_hand(m, r, v, eps, delta), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("r", [10, 100, 600])
def test_perfect_guesses_without_delta_have_a_closed_form(r: int) -> None:
    # v = r, delta = 0: p = q^r, so the bound is eps = -ln(p^(-1/r) - 1).
    got = one_run.epsilon_lower_bound(canaries=1000, guesses=r, correct=r, delta=0.0, confidence=0.95)
    assert got == pytest.approx(-math.log(0.05 ** (-1.0 / r) - 1.0), abs=1e-6)


def test_the_delta_term_and_the_papers_example() -> None:
    # 600 perfect guesses among 1,000 canaries at delta 1e-5 (the example their
    # published code prints): the delta term lowers the bound below the closed form.
    with_delta = one_run.epsilon_lower_bound(canaries=1000, guesses=600, correct=600, delta=1e-5,
                                             confidence=0.95)
    without = -math.log(0.05 ** (-1.0 / 600) - 1.0)
    assert 4.5 < with_delta < without
    # At the bound the p-value computed by hand sits at 0.05.
    assert p_value_by_hand(1000, 600, 600, with_delta, 1e-5) == pytest.approx(0.05, rel=1e-6)


def test_bound_monotone_and_below_its_ceiling() -> None:
    bounds = [one_run.epsilon_lower_bound(canaries=1000, guesses=200, correct=v, delta=1e-5,
                                          confidence=0.95) for v in (100, 120, 150, 180, 200)]
    assert bounds[0] == 0.0 and all(a < b for a, b in zip(bounds[1:], bounds[2:], strict=False))
    ceiling = one_run.ceiling(canaries=1000, delta=1e-5, confidence=0.95)
    assert bounds[-1] <= ceiling
    assert ceiling == pytest.approx(one_run.epsilon_lower_bound(
        canaries=1000, guesses=1000, correct=1000, delta=1e-5, confidence=0.95), rel=0.02)


def test_guesses_count_top_and_bottom() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.2, 0.8, 0.3])
    included = np.array([False, True, False, True, True, False])
    g = one_run.guess(scores=scores, included=included, top=2, bottom=2)
    # top two (0.9, 0.8) both included; bottom two (0.1, 0.2): one excluded, one included.
    assert (g.guesses, g.correct) == (4, 3)
    with pytest.raises(ConfigError):
        one_run.guess(scores=scores, included=included, top=4, bottom=3)


def test_rules_split_the_error_budget() -> None:
    rules = guess_rules(1000, per_side=50)
    assert rules[0][:2] == (50, 50) and rules[1][:2] == (436, 436)
    assert sum(r[2] for r in rules) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    included = rng.uniform(size=1000) < 0.5
    perfect = one_run_bound(scores=included + 0.0, included=included, rules=rules, delta=1e-5,
                            confidence=0.95)
    assert perfect.epsilon_lower_bound == pytest.approx(perfect.ceiling)
    blind = one_run_bound(scores=rng.normal(size=1000), included=included, rules=rules,
                          delta=1e-5, confidence=0.95)
    assert blind.epsilon_lower_bound < 1.0 and blind.ceiling == perfect.ceiling
    with pytest.raises(ConfigError):
        one_run_bound(scores=included + 0.0, included=included, rules=[(1, 1, 0.7), (2, 2, 0.7)],
                      delta=1e-5, confidence=0.95)
