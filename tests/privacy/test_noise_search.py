"""The noise search behind every calibration: over decreasing epsilon curves of
many shapes (smooth power laws, plateaus, jumps, curves far from a line in
log-log), the noise it returns meets the target, the noise a tolerance below
it does not, and it asks for few epsilons; the calibrators it serves agree with
a plain bisection."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securediff.errors import ConfigError
from securediff.privacy.accountants import calibrate_noise_multiplier, dpsgd_epsilon
from securediff.privacy.noise_search import smallest_safe_noise

REL_TOL = 1e-4


def _bisection(epsilon, target: float, rel_tol: float = REL_TOL) -> float:
    """The search as it was written before: doubling, halving, then bisection."""
    lo, hi = 0.5, 1.0
    while epsilon(hi) > target:
        lo, hi = hi, 2.0 * hi
    while lo > 1e-3 and epsilon(lo) <= target:
        lo, hi = lo / 2.0, lo
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if epsilon(mid) > target else (lo, mid)
    return hi


@st.composite
def _curves(draw):
    """A decreasing epsilon(z), and a target it crosses inside [2e-3, 5e3]."""
    kind = draw(st.sampled_from(["power", "exp", "steps", "kinked"]))
    a = draw(st.floats(0.05, 50.0))
    b = draw(st.floats(0.3, 4.0))
    if kind == "power":
        def curve(z):
            return a / z ** b
    elif kind == "exp":
        def curve(z):
            return a * math.exp(-b * z) + 1e-9 / z
    elif kind == "steps":  # plateaus: flat stretches where an interpolation cannot aim
        def curve(z):
            return a * 2.0 ** -math.floor(b * 8 * math.log2(z + 1.0)) + 1e-6 / z
    else:  # a sharp bend: steep below 1, almost flat above
        def curve(z):
            return a / z ** (6.0 * b) if z < 1.0 else a / z ** (0.05 * b)
    z_star = draw(st.floats(3e-3, 3e3))
    target = curve(z_star)
    if not (0.0 < target < math.inf and math.isfinite(target)):
        target = 1.0
    return curve, target


@settings(max_examples=300, deadline=None)
@given(_curves())
def test_the_noise_returned_meets_the_target_and_a_tolerance_less_does_not(case):
    curve, target = case
    calls = []

    def epsilon(z):
        calls.append(z)
        return curve(z)

    try:
        z = smallest_safe_noise(epsilon, target=target, rel_tol=REL_TOL, start=1.0, what="test")
    except ConfigError:  # nothing up to 1e4 reaches it: a curve flat above
        assert curve(1e4) > target or curve(2.0 ** 14) > target
        return
    assert z in calls and curve(z) <= target  # computed, and safe
    if z > 1e-3:  # the least noise searched is 1e-3 (returned as is when it already meets the target)
        assert curve(z * (1.0 - REL_TOL)) > target  # and the smallest to the tolerance
    bisection_calls = []
    _bisection(lambda v: bisection_calls.append(v) or curve(v), target)
    assert len(calls) <= 2 * len(bisection_calls) + 2


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
@pytest.mark.parametrize(("target", "q", "steps"), [(10.0, 0.05, 300), (1.0, 0.01, 1000), (4.0, 1.0, 1),
                                                    (0.5, 0.2, 50)])
def test_on_the_accountants_curves_it_matches_bisection_with_fewer_calls(accountant, target, q, steps):
    old_calls, new_calls = [], []

    def epsilon(z, calls):
        calls.append(z)
        return dpsgd_epsilon(noise_multiplier=z, sample_rate=q, steps=steps, delta=1e-5, accountant=accountant)

    old = _bisection(lambda z: epsilon(z, old_calls), target)
    new = smallest_safe_noise(lambda z: epsilon(z, new_calls), target=target, rel_tol=REL_TOL, start=1.0,
                              what="test")
    assert new == pytest.approx(old, rel=2 * REL_TOL)
    assert epsilon(new, []) <= target
    assert len(new_calls) < len(old_calls)


def test_the_calibration_is_asked_of_the_accountant_once_per_process():
    args = {"target_epsilon": 3.0, "sample_rate": 0.1, "steps": 40, "delta": 1e-5, "accountant": "rdp"}
    first = calibrate_noise_multiplier(**args)
    assert calibrate_noise_multiplier(**args) == first
    with pytest.raises(ConfigError, match="target_epsilon"):
        calibrate_noise_multiplier(**{**args, "target_epsilon": math.inf})
    # the memo does not coerce: a fractional step count is refused, not truncated
    with pytest.raises(ConfigError, match="steps"):
        calibrate_noise_multiplier(**{**args, "steps": 40.5})
