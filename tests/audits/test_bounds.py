"""Bounds pinned against independent computations, and their soundness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from audits.bounds.gdp import epsilon_of_mu, mu_lower_bound, mu_of_epsilon, mu_of_rates
from audits.bounds.rates import (
    clopper_pearson,
    cp_upper,
    epsilon_ceiling,
    epsilon_from_counts,
    epsilon_of_rates,
)
from audits.bounds.roc import auc_with_ci, tpr_at_fpr
from audits.bounds.thresholds import bonferroni_bound, counts_at, heldout_bound
from audits.bounds.verdict import strongest, verdict
from securediff.errors import ConfigError
from securediff.privacy.accountants import gaussian_epsilon


def binom_cdf(k: int, n: int, p: float) -> float:
    """P[Binomial(n, p) <= k] by direct summation (independent of scipy)."""
    return math.fsum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 40), (17, 60), (59, 60)])
def test_clopper_pearson_solves_its_defining_equations(k: int, n: int) -> None:
    lo, hi = clopper_pearson(successes=k, trials=n, confidence=0.9)
    assert binom_cdf(k, n, hi) == pytest.approx(0.05, abs=1e-9)
    if k > 0:
        assert 1.0 - binom_cdf(k - 1, n, lo) == pytest.approx(0.05, abs=1e-9)
    else:
        assert lo == 0.0
    assert lo < k / n < hi or k == 0


def test_zero_errors_closed_form_and_the_ln_n_over_3_ceiling() -> None:
    n, alpha = 1000, 0.025
    assert float(cp_upper(successes=0, trials=n, alpha=alpha)) == pytest.approx(1 - alpha ** (1 / n))
    assert float(cp_upper(successes=n, trials=n, alpha=alpha)) == 1.0
    fpr = 1 - 0.025 ** (1 / n)
    expected = math.log((1 - 1e-5 - fpr) / fpr)
    assert epsilon_ceiling(negatives=n, positives=n, delta=1e-5, confidence=0.95) == pytest.approx(expected)
    big = 10**7  # the rule of thumb: about ln(N / 3) at 95%
    ceiling = epsilon_ceiling(negatives=big, positives=big, delta=1e-5, confidence=0.95)
    assert math.log(big / 4) < ceiling < math.log(big / 3)


def test_epsilon_from_counts_pinned_by_hand() -> None:
    # 50 false positives of 10,000, 2,000 false negatives of 10,000, one threshold.
    fpr_hi = float(cp_upper(successes=50, trials=10_000, alpha=0.025))
    fnr_hi = float(cp_upper(successes=2000, trials=10_000, alpha=0.025))
    expected = math.log((1 - 1e-5 - fnr_hi) / fpr_hi)
    got = float(epsilon_from_counts(false_positives=50, negatives=10_000, false_negatives=2000,
                                    positives=10_000, delta=1e-5, confidence=0.95))
    assert got == pytest.approx(expected)
    assert 4.5 < got < math.log(0.8 / 0.005)  # below the point estimate ln(0.8 / 0.005) = 5.07
    k20 = float(epsilon_from_counts(false_positives=50, negatives=10_000, false_negatives=2000,
                                    positives=10_000, delta=1e-5, confidence=0.95, tests=20))
    assert k20 < got


def test_rates_symmetry_and_chance() -> None:
    assert float(epsilon_of_rates(0.5, 0.5, delta=0.0)) == 0.0
    assert float(epsilon_of_rates(0.9, 0.9, delta=0.0)) == 0.0
    a = float(epsilon_of_rates(0.01, 0.3, delta=1e-5))
    assert a == pytest.approx(float(epsilon_of_rates(0.3, 0.01, delta=1e-5)))
    assert a == pytest.approx(math.log((1 - 1e-5 - 0.3) / 0.01))


@settings(max_examples=60, deadline=None)
@given(fp=st.integers(0, 200), fn=st.integers(0, 200), neg=st.integers(200, 5000),
       pos=st.integers(200, 5000))
def test_no_bound_exceeds_its_ceiling(fp: int, fn: int, neg: int, pos: int) -> None:
    kw = dict(negatives=neg, positives=pos, delta=1e-5, confidence=0.95)
    bound = float(epsilon_from_counts(false_positives=fp, false_negatives=fn, **kw))
    assert 0.0 <= bound <= epsilon_ceiling(**kw) + 1e-12


def test_bonferroni_bound_is_sound_for_a_gaussian_mechanism() -> None:
    """Scores N(0,1) vs N(mu,1): the mechanism is exactly mu-GDP; the (eps, delta)
    bound must stay below its epsilon, and the mu bound below mu."""
    rng = np.random.default_rng(0)
    mu, n = 1.5, 200_000
    members, nonmembers = rng.normal(mu, 1.0, n), rng.normal(0.0, 1.0, n)
    thresholds = norm.isf(np.geomspace(0.45, 1e-4, 20))
    b = bonferroni_bound(members=members, nonmembers=nonmembers, thresholds=thresholds,
                         delta=1e-5, confidence=0.95)
    exact = gaussian_epsilon(mu=mu, delta=1e-5)
    assert 0.5 * exact < b.epsilon_lower_bound <= exact
    assert 0.9 * mu < b.mu_lower_bound <= mu
    assert b.epsilon_gdp <= exact and b.epsilon_gdp == pytest.approx(
        epsilon_of_mu(mu=b.mu_lower_bound, delta=1e-5))
    fp, fn = counts_at(members, nonmembers, thresholds=thresholds[[3]])
    assert fp[0] == int((nonmembers >= thresholds[3]).sum())
    assert fn[0] == int((members < thresholds[3]).sum())


def test_heldout_threshold_comes_from_the_selection_split_only() -> None:
    rng = np.random.default_rng(1)
    sm, sn = rng.normal(2.0, 1.0, 500), rng.normal(0.0, 1.0, 500)
    em, en = rng.normal(2.0, 1.0, 500), rng.normal(0.0, 1.0, 500)
    a = heldout_bound(select_members=sm, select_nonmembers=sn, eval_members=em,
                      eval_nonmembers=en, delta=1e-5, confidence=0.95)
    assert a.threshold in set(np.concatenate([sm, sn]))
    # Evaluated counts recomputed independently at that threshold.
    assert a.false_positives == int((en >= a.threshold).sum())
    assert a.false_negatives == int((em < a.threshold).sum())
    assert a.epsilon_lower_bound == pytest.approx(float(epsilon_from_counts(
        false_positives=a.false_positives, negatives=500, false_negatives=a.false_negatives,
        positives=500, delta=1e-5, confidence=0.95)))
    # Scrambling the evaluated scores never moves the threshold.
    b = heldout_bound(select_members=sm, select_nonmembers=sn, eval_members=rng.permutation(en),
                      eval_nonmembers=em, delta=1e-5, confidence=0.95)
    assert b.threshold == a.threshold and b.epsilon_lower_bound == 0.0


def test_gdp_pins() -> None:
    one = norm.cdf(-1.0)
    assert float(mu_of_rates(one, one)) == pytest.approx(2.0)
    assert float(mu_of_rates(0.5, 0.5)) == 0.0
    mu = mu_of_epsilon(epsilon=4.0, delta=1e-5)
    assert epsilon_of_mu(mu=mu, delta=1e-5) == pytest.approx(4.0, rel=1e-6)
    assert mu == pytest.approx(0.9249, abs=1e-3)
    got = float(mu_lower_bound(false_positives=100, negatives=1000, false_negatives=100,
                               positives=1000, confidence=0.95))
    hi = float(cp_upper(successes=100, trials=1000, alpha=0.025))
    assert got == pytest.approx(-2.0 * norm.ppf(hi))


def test_verdicts() -> None:
    assert verdict(lower_bound=5.0, ceiling=9.0, claimed=4.0) == "violation"
    assert verdict(lower_bound=3.0, ceiling=9.0, claimed=4.0) == "consistent"
    assert verdict(lower_bound=3.0, ceiling=4.0, claimed=4.0) == "uninformative"
    assert verdict(lower_bound=0.0, ceiling=2.0, claimed=10.0) == "uninformative"
    # A bound of 0 under a high ceiling: the detector showed no power, so its
    # silence is no evidence (a blind detector reads 0 against a no-noise mutant).
    assert verdict(lower_bound=0.0, ceiling=9.0, claimed=4.0) == "uninformative"
    assert verdict(lower_bound=3.0, ceiling=9.0, claimed=None) == "no-claim"
    assert verdict(lower_bound=3.0, ceiling=9.0, claimed=math.inf) == "no-claim"
    assert strongest(["uninformative", "consistent", "no-claim"]) == "consistent"
    assert strongest(["consistent", "violation"]) == "violation"


def test_auc_and_delong_against_independent_computations() -> None:
    rng = np.random.default_rng(2)
    m = np.round(rng.normal(0.7, 1.0, 60), 1)  # rounding makes ties
    n = np.round(rng.normal(0.0, 1.0, 45), 1)
    auc = auc_with_ci(members=m, nonmembers=n, confidence=0.95)
    labels = np.r_[np.ones(m.size), np.zeros(n.size)]
    assert auc.value == pytest.approx(roc_auc_score(labels, np.r_[m, n]))
    # DeLong by its structural components, brute force.
    psi = (m[:, None] > n[None, :]) + 0.5 * (m[:, None] == n[None, :])
    var = psi.mean(1).var(ddof=1) / m.size + psi.mean(0).var(ddof=1) / n.size
    half = norm.isf(0.025) * math.sqrt(var)
    assert (auc.low, auc.high) == pytest.approx((auc.value - half, auc.value + half))


def test_tpr_at_fpr_is_null_below_the_resolution() -> None:
    m, n = np.arange(100.0) + 0.5, np.arange(100.0)
    r = tpr_at_fpr(members=m, nonmembers=n, fpr=0.001)
    assert r.value is None and "1/100" in r.reason
    r = tpr_at_fpr(members=m, nonmembers=n, fpr=0.05)
    # Threshold 94.5 (a member's score): non-members 95..99 above (5 of 100), members
    # 94.5..99.5 above (6 of 100); any lower threshold lets a sixth non-member in.
    assert r.value == pytest.approx(6 / 100) and r.reason is None


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigError):
        clopper_pearson(successes=5, trials=3, confidence=0.95)
    with pytest.raises(ConfigError):
        epsilon_from_counts(false_positives=0, negatives=10, false_negatives=0, positives=10,
                            delta=1e-5, confidence=1.5)
    with pytest.raises(ConfigError):
        auc_with_ci(members=np.array([]), nonmembers=np.array([1.0]))
