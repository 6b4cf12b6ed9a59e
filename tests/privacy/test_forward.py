"""Forward-noise mechanism: schedule, bounds pinned against the paper and an
independent PLD, calibration, once-only noising, continuation to t > t0."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import PLDAccountant
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from securediff.errors import BudgetExceededError, ConfigError, PrivacyError
from securediff.privacy.accountants import gaussian_delta, gaussian_epsilon
from securediff.privacy.forward import (
    calibrate_clip,
    calibrate_t0,
    continue_forward,
    epsilon_classic,
    epsilon_exact,
    forward_sigma,
    linear_alphas_cumprod,
    noise_once,
)
from securediff.privacy.ledger import ForwardNoiseEvent, PrivacyLedger
from securediff.rng import RandomSource

ABAR = linear_alphas_cumprod()
DELTA = 1e-5
# FACTS.md / the paper: T=1000 linear 1e-4..0.02, C=10, delta=1e-5.
REFERENCE = [(690, 10.24, 8.77), (750, 6.24, 5.20), (800, 4.07, 3.31)]


def sigma_at(t0: int) -> float:
    return forward_sigma(ABAR[t0])


def test_linear_schedule_indexing() -> None:
    assert ABAR.shape == (1001,) and ABAR.dtype == np.float64
    assert ABAR[0] == 1.0
    assert ABAR[1] == pytest.approx(1 - 1e-4, abs=1e-15)
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    assert ABAR[1000] == pytest.approx(math.prod(1 - b for b in betas), rel=1e-12)
    assert ABAR[690] == pytest.approx(math.prod(1 - b for b in betas[:690]), rel=1e-12)


def test_matches_the_diffusion_schedule() -> None:
    from securediff.diffusion.schedule import linear_schedule

    np.testing.assert_allclose(linear_schedule(1000).abar, ABAR, rtol=1e-14)


@pytest.mark.parametrize(("t0", "classic", "exact"), REFERENCE)
def test_reference_epsilons(t0: int, classic: float, exact: float) -> None:
    s = sigma_at(t0)
    assert epsilon_classic(sigma=s, clip_norm=10, delta=DELTA) == pytest.approx(classic, abs=5e-3)
    assert epsilon_exact(sigma=s, clip_norm=10, delta=DELTA) == pytest.approx(exact, abs=5e-3)


@pytest.mark.parametrize("t0", [500, 690, 800, 950])
def test_exact_matches_dp_accounting_pld(t0: int) -> None:
    s = sigma_at(t0)
    acc = PLDAccountant(value_discretization_interval=1e-3)  # add/remove: shift = 1 multiplier
    acc.compose(dp_accounting.GaussianDpEvent(s / 20.0))
    pld = acc.get_epsilon(DELTA)
    assert epsilon_exact(sigma=s, clip_norm=10, delta=DELTA) == pytest.approx(pld, abs=1e-3)


@pytest.mark.parametrize(
    ("mu", "eps"), [(0.5, 0.0), (1.0, 0.3), (2.0, 1.0), (5.0, 4.0), (8.0, 30.0)]
)
def test_gaussian_delta_matches_scipy(mu: float, eps: float) -> None:
    expected = norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * norm.cdf(-mu / 2 - eps / mu)
    assert gaussian_delta(mu=mu, epsilon=eps) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_gaussian_delta_far_tail_stays_positive_and_decreasing() -> None:
    # erfc underflows near 38; the log-space path must keep going.
    values = [gaussian_delta(mu=40.0, epsilon=e) for e in (900.0, 1000.0, 1100.0)]
    assert all(v > 0.0 for v in values[:2])
    assert values[0] > values[1] >= values[2]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(mu=st.floats(0.05, 40.0), log_delta=st.floats(-12.0, -1.0))
def test_gaussian_epsilon_inverts_delta(mu: float, log_delta: float) -> None:
    delta = 10.0**log_delta
    eps = gaussian_epsilon(mu=mu, delta=delta)
    assert gaussian_delta(mu=mu, epsilon=eps) <= delta
    if eps > 0.0:
        assert gaussian_delta(mu=mu, epsilon=eps * (1 - 1e-6) - 1e-9) > delta


@settings(max_examples=30, deadline=None, derandomize=True)
@given(ratio=st.floats(0.05, 5.0), log_delta=st.floats(-10.0, -2.0))
def test_classic_bound_is_never_tighter(ratio: float, log_delta: float) -> None:
    delta = 10.0**log_delta
    s = 1.0 / ratio
    assert epsilon_classic(sigma=s, clip_norm=1.0, delta=delta) >= epsilon_exact(
        sigma=s, clip_norm=1.0, delta=delta
    )


def test_bad_values_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        forward_sigma(1.0)
    with pytest.raises(ConfigError):
        epsilon_exact(sigma=1.0, clip_norm=1.0, delta=-1e-5)
    with pytest.raises(ConfigError):
        epsilon_classic(sigma=0.0, clip_norm=1.0, delta=1e-5)
    with pytest.raises(ConfigError):
        linear_alphas_cumprod(T=0)
    with pytest.raises(ConfigError):
        calibrate_t0(target_epsilon=8.0, clip_norm=10, delta=DELTA, abar=ABAR[1:])  # abar[0] != 1


@pytest.mark.parametrize("method", ["exact", "classic"])
@pytest.mark.parametrize("target", [3.0, 8.0, 10.0, 20.0])
def test_calibrate_t0_is_smallest_meeting_target(method: str, target: float) -> None:
    f = epsilon_exact if method == "exact" else epsilon_classic
    t0 = calibrate_t0(target_epsilon=target, clip_norm=10, delta=DELTA, abar=ABAR, method=method)
    assert f(sigma=sigma_at(t0), clip_norm=10, delta=DELTA) <= target
    assert f(sigma=sigma_at(t0 - 1), clip_norm=10, delta=DELTA) > target


def test_calibrate_t0_reference() -> None:
    assert (
        calibrate_t0(target_epsilon=10.25, clip_norm=10, delta=DELTA, abar=ABAR, method="classic")
        == 690
    )
    assert calibrate_t0(target_epsilon=8.78, clip_norm=10, delta=DELTA, abar=ABAR) == 690
    with pytest.raises(ConfigError, match="no t0"):
        calibrate_t0(target_epsilon=0.05, clip_norm=10, delta=DELTA, abar=ABAR)


@pytest.mark.parametrize("method", ["exact", "classic"])
def test_calibrate_clip(method: str) -> None:
    f = epsilon_exact if method == "exact" else epsilon_classic
    target = f(sigma=sigma_at(690), clip_norm=10.0, delta=DELTA)
    c = calibrate_clip(target_epsilon=target, t0=690, delta=DELTA, abar=ABAR, method=method)
    assert c == pytest.approx(10.0, rel=1e-6)
    assert f(sigma=sigma_at(690), clip_norm=c, delta=DELTA) <= target
    assert f(sigma=sigma_at(690), clip_norm=c * (1 + 1e-7), delta=DELTA) > target
    with pytest.raises(ConfigError):
        calibrate_clip(target_epsilon=5.0, t0=1001, delta=DELTA, abar=ABAR)


def _ledger(budget: float = 50.0) -> PrivacyLedger:
    return PrivacyLedger(client_id="c0", budget_epsilon=budget, delta=DELTA)


def test_noise_once_formula_and_clip() -> None:
    x = torch.zeros(3, 1, 4, 4)
    x[0] = 100.0  # norm 400: clipped to 10
    x[1, 0, 0, 0] = 3.0  # norm 3: untouched
    ledger = _ledger()
    out = noise_once(
        x,
        clip_norm=10.0,
        t0=690,
        abar=ABAR,
        source=RandomSource.insecure_from_seed(7),
        ledger=ledger,
        data_id="client0/train",
    )
    assert out.shape == x.shape and out.dtype == torch.float32
    a = ABAR[690]
    z = RandomSource.insecure_from_seed(7).normal((3, 1, 4, 4), dtype=torch.float64)
    clipped = x.double().clone()
    clipped[0] = 10.0 / 4.0  # 16 pixels of equal value with norm 10
    expected = math.sqrt(a) * clipped + math.sqrt(1 - a) * z
    torch.testing.assert_close(out, expected.float(), rtol=1e-6, atol=1e-6)
    (event,) = ledger.events
    assert event == ForwardNoiseEvent(
        sigma=forward_sigma(a), clip_norm=10.0, t0=690, data_id="client0/train"
    )


def test_noise_once_refuses_the_same_data_twice() -> None:
    ledger = _ledger()
    x = torch.ones(2, 5)
    kw = dict(clip_norm=1.0, t0=800, abar=ABAR, ledger=ledger)
    noise_once(x, source=RandomSource.insecure_from_seed(1), data_id="d", **kw)
    with pytest.raises(PrivacyError, match="already forward-noised"):
        noise_once(x, source=RandomSource.insecure_from_seed(1), data_id="d", **kw)
    assert len(ledger.events) == 1
    noise_once(x, source=RandomSource.insecure_from_seed(1), data_id="other", **kw)
    assert len(ledger.events) == 2


def test_noise_once_charges_before_drawing() -> None:
    ledger = _ledger(budget=5.0)  # t0=690 costs ~8.77
    src = RandomSource.insecure_from_seed(3)
    with pytest.raises(BudgetExceededError):
        noise_once(
            torch.ones(2, 4),
            clip_norm=10.0,
            t0=690,
            abar=ABAR,
            source=src,
            ledger=ledger,
            data_id="d",
        )
    assert ledger.events == ()
    # nothing was drawn: the stream is where a fresh one starts
    assert np.array_equal(src.uniform(4), RandomSource.insecure_from_seed(3).uniform(4))


def test_continue_forward_formula_and_range() -> None:
    gen = torch.Generator().manual_seed(0)
    x_tilde = torch.randn(4, 2, 3, generator=gen)
    noise = torch.randn(4, 2, 3, generator=gen)
    t = torch.tensor([691, 700, 850, 1000])
    out = continue_forward(x_tilde, t=t, abar=ABAR, t0=690, noise=noise)
    for i, ti in enumerate(t.tolist()):
        r = ABAR[ti] / ABAR[690]
        torch.testing.assert_close(out[i], math.sqrt(r) * x_tilde[i] + math.sqrt(1 - r) * noise[i])
    out_int = continue_forward(x_tilde, t=900, abar=ABAR, t0=690, noise=noise)
    r = ABAR[900] / ABAR[690]
    torch.testing.assert_close(out_int, math.sqrt(r) * x_tilde + math.sqrt(1 - r) * noise)
    for bad in (torch.tensor([690, 700, 700, 700]), torch.tensor([691, 700, 700, 1001]), 12):
        with pytest.raises(ConfigError):
            continue_forward(x_tilde, t=bad, abar=ABAR, t0=690, noise=noise)


def test_continuation_has_the_marginal_of_the_forward_process() -> None:
    # x~ then continue to t has mean sqrt(abar_t) clip(x) and variance 1 - abar_t.
    gen = torch.Generator().manual_seed(1)
    n, t0, t = 40000, 300, 600
    x0 = torch.full((n, 1), 0.5, dtype=torch.float64)
    x_tilde = math.sqrt(ABAR[t0]) * x0 + math.sqrt(1 - ABAR[t0]) * torch.randn(
        n, 1, generator=gen, dtype=torch.float64
    )
    noise = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    xt = continue_forward(x_tilde, t=t, abar=ABAR, t0=t0, noise=noise)
    assert float(xt.mean()) == pytest.approx(0.5 * math.sqrt(ABAR[t]), abs=0.02)
    assert float(xt.var()) == pytest.approx(1 - ABAR[t], rel=0.03)
