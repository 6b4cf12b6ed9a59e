"""Adaptive clipping: the quantile-tracking rule converges to the target quantile
on norms of a known distribution, and the ledger's epsilon with adaptive
clipping equals an independent computation of the composed mechanisms."""

import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import PLDAccountant
from scipy.stats import lognorm, norm
from torch import nn

from securediff.config import from_dict
from securediff.errors import ConfigError, PrivacyError
from securediff.federation.clipping import WARMUP_GRID, clip_with_bits, next_update_clip
from securediff.privacy.accountants import PLD_DISCRETIZATION
from securediff.privacy.adaptive import (
    AdaptiveClipDPSGD,
    QuantilePlan,
    count_noise_for,
    mechanism_split,
    noisy_count_step,
    private_quantile,
    quantile_noise_for,
    split_noise,
)
from securediff.privacy.dpsgd import DPSGD
from securediff.privacy.forward import forward_sigma, linear_alphas_cumprod
from securediff.privacy.ledger import (
    DPSGDEvent,
    ForwardNoiseEvent,
    PrivacyLedger,
    QuantileCountEvent,
    event_from_dict,
)
from securediff.rng import RandomSource

# Norms with a known distribution: lognormal, median 2, shape 0.5.
NORMS = lognorm(s=0.5, scale=2.0)
TOLERANCE = 0.05  # |F(C) - gamma| at the end, F the true CDF of the norms


def _gen(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("gamma", [0.3, 0.5, 0.9])
def test_dpsgd_rule_converges_to_the_target_quantile_under_its_noise(gamma):
    """Per-sample rule, with the count noise DP-SGD uses (expected batch 64 -> std 3.2),
    from C = 0.1 (a factor 20 off the median) in 800 steps of lr 0.2."""
    rng, source = _gen(1), RandomSource.insecure_from_seed(1)
    batch, clip, tail = 64, 0.1, []
    for step in range(800):
        norms = NORMS.rvs(size=rng.poisson(batch), random_state=rng)
        clip = noisy_count_step(clip, norms, count_noise=batch / 20, expected_count=batch,
                                target_quantile=gamma, lr=0.2, source=source)
        if step >= 600:
            tail.append(clip)
    # The last 200 steps sit at the quantile: each one and their geometric mean.
    assert abs(NORMS.cdf(math.exp(np.mean(np.log(tail)))) - gamma) < TOLERANCE
    assert all(abs(NORMS.cdf(c) - gamma) < 3 * TOLERANCE for c in tail)


@pytest.mark.parametrize("gamma", [0.5, 0.8])
def test_update_rule_converges_from_its_warm_start(gamma):
    """Shared updates: 20 clients a round, the first round's grid then one bit."""
    rng = _gen(2)
    clip, weights, tail = None, rng.integers(50, 150, size=20).astype(float), []
    for r in range(150):
        bits = []
        for w in weights:
            update = rng.normal(size=8)
            update *= NORMS.rvs(random_state=rng) / np.linalg.norm(update)
            clipped, b = clip_with_bits(update, clip)
            assert np.linalg.norm(clipped) <= (clip or np.inf) * (1 + 1e-12)
            bits.append(w * b)
        mean_bits = np.sum(bits, axis=0) / weights.sum()
        if clip is None:  # the grid's first norm at or above the quantile (a factor 2)
            nxt = next_update_clip(clip, mean_bits, target_quantile=gamma, lr=0.2)
            assert nxt in WARMUP_GRID and nxt / 2 < NORMS.ppf(gamma) * 1.6
        clip = next_update_clip(clip, mean_bits, target_quantile=gamma, lr=0.2)
        if r >= 100:
            tail.append(clip)
    assert abs(NORMS.cdf(math.exp(np.mean(np.log(tail)))) - gamma) < TOLERANCE


def test_private_quantile_of_record_norms():
    """PFDM's data-aware C: 10 clients of 100 records, the noise of quantile epsilon 0.5."""
    rng = _gen(3)
    norms = [NORMS.rvs(size=100, random_state=rng) for _ in range(10)]
    std = quantile_noise_for(epsilon=0.5, delta=1e-5, steps=12)
    for gamma in (0.5, 0.9):
        plan = QuantilePlan(low=8 / 1024, high=8.0, steps=12, noise_std=std, target_quantile=gamma)
        sources = [RandomSource.insecure_from_seed(10 + i) for i in range(10)]
        clip = private_quantile(norms, plan=plan, sources=sources)
        assert abs(NORMS.cdf(clip) - gamma) < TOLERANCE


def _analytic_delta(mu: float, eps: float) -> float:
    """Balle & Wang's delta(eps) of a Gaussian with mu = shift / std, from scipy."""
    return norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * norm.cdf(-mu / 2 - eps / mu)


def test_ledger_epsilon_of_the_private_quantile_and_forward_noise_is_the_composed_gaussian():
    """Counts (sensitivity 1, std s, K of them) and the forward noise (sensitivity 2C,
    std sigma) compose to one Gaussian with mu^2 = K / s^2 + (2C / sigma)^2."""
    sigma, clip, std, k, delta = forward_sigma(linear_alphas_cumprod()[640]), 6.8, 24.36, 12, 1e-5
    ledger = PrivacyLedger(client_id="a", budget_epsilon=20.0, delta=delta, accountant="exact")
    ledger.charge(QuantileCountEvent(noise_std=std, steps=k, data_id="a/members"))
    ledger.charge(ForwardNoiseEvent(sigma=sigma, clip_norm=clip, t0=640, data_id="a/members"))
    eps = ledger.epsilon("shared")
    mu = math.sqrt(k / std**2 + (2 * clip / sigma) ** 2)
    assert _analytic_delta(mu, eps) <= delta * (1 + 1e-6)
    assert _analytic_delta(mu, eps - 1e-4) > delta
    # The default accountant (PLD) agrees within its discretisation, from above.
    pld = ledger.epsilon("shared", accountant="pld")
    assert eps <= pld <= eps + 0.02


def test_adaptive_dpsgd_event_equals_the_two_mechanisms_composed_without_sampling():
    """q = 1: gradients (multiplier z_grad) and the centred count (shift 1/2, std s)
    composed as two Gaussians by dp_accounting equal the ledger's joint event."""
    z, s, steps, delta = 1.1, 3.2, 50, 1e-5
    z_grad = split_noise(z, s)
    ledger = PrivacyLedger(client_id="a", budget_epsilon=1e3, delta=delta)
    ledger.charge(DPSGDEvent(z, 1.0, steps, "personal", count_noise=s))
    acc = PLDAccountant(dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
                        value_discretization_interval=PLD_DISCRETIZATION)
    acc.compose(dp_accounting.GaussianDpEvent(z_grad), steps)
    acc.compose(dp_accounting.GaussianDpEvent(2 * s), steps)
    assert ledger.epsilon("personal") == pytest.approx(acc.get_epsilon(delta), rel=5e-3)


def test_adaptive_dpsgd_event_with_sampling_is_andrews_joint_multiplier():
    """q < 1: Andrew et al. Thm 1, z = (z_grad^-2 + (2 s)^-2)^-1/2, computed here
    from the gradients' multiplier and fed to dp_accounting directly."""
    z_grad, s, q, steps, delta = 1.05, 3.2, 0.05, 600, 1e-5
    z = (z_grad**-2 + (2 * s) ** -2) ** -0.5
    ledger = PrivacyLedger(client_id="a", budget_epsilon=1e3, delta=delta)
    ledger.charge(DPSGDEvent(z, q, steps, "shared", count_noise=s))
    assert split_noise(z, s) == pytest.approx(z_grad, rel=1e-12)
    acc = PLDAccountant(dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
                        value_discretization_interval=PLD_DISCRETIZATION)
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), steps)
    assert ledger.epsilon("shared") == pytest.approx(acc.get_epsilon(delta), rel=1e-9)
    split = mechanism_split(ledger.events, delta=delta, accountant="pld")
    parts = split[0]["parts"]
    assert parts["gradients"]["noise_multiplier"] == pytest.approx(z_grad)
    assert parts["clip count"]["epsilon"] < parts["gradients"]["epsilon"] < split[0]["epsilon"]


def test_count_noise_never_takes_more_than_a_quarter_of_the_budget():
    assert count_noise_for(noise_multiplier=1.0, expected_batch_size=64) == pytest.approx(3.2)
    small = count_noise_for(noise_multiplier=1.0, expected_batch_size=4)
    assert split_noise(1.0, small) == pytest.approx(1 / math.sqrt(0.75))
    with pytest.raises(ConfigError):
        DPSGDEvent(2.0, 0.1, 1, "shared", count_noise=1.0)  # 2 s must exceed z


def test_events_round_trip_and_fixed_events_keep_their_format():
    fixed = DPSGDEvent(1.0, 0.1, 3, "shared")
    assert "count_noise" not in fixed.to_dict()
    adaptive = DPSGDEvent(1.0, 0.1, 3, "shared", count_noise=3.2)
    count = QuantileCountEvent(noise_std=20.0, steps=12, data_id="a/members")
    for event in (fixed, adaptive, count):
        assert event_from_dict(event.to_dict()) == event
    ledger = PrivacyLedger(client_id="a", budget_epsilon=100.0, delta=1e-5)
    ledger.charge(adaptive)
    ledger.charge(DPSGDEvent(1.0, 0.1, 2, "shared", count_noise=3.2))
    ledger.charge(fixed)  # same sigma and q, but no count: a separate event
    assert [e.steps for e in ledger.events] == [5, 3]


def _tiny_dpsgd(noise_multiplier: float, seed: int) -> DPSGD:
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.fill_(0.5)
        model.bias.zero_()
    return DPSGD(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                 max_grad_norm=1.0, noise_multiplier=noise_multiplier, expected_batch_size=32,
                 source=RandomSource.insecure_from_seed(seed), ledger=None, sample_rate=0.5)


def test_adaptive_dpsgd_charges_the_joint_event_and_moves_its_norm():
    z, s = 1.0, count_noise_for(noise_multiplier=1.0, expected_batch_size=32)
    ledger = PrivacyLedger(client_id="a", budget_epsilon=100.0, delta=1e-5)
    wrapped = AdaptiveClipDPSGD(inner=_tiny_dpsgd(split_noise(z, s), 0), ledger=ledger,
                                noise_multiplier=z, count_noise=s, sample_rate=0.5,
                                expected_batch_size=32, clip=1e-3, target_quantile=0.5, lr=0.2,
                                source=RandomSource.insecure_from_seed(5), artefact="shared")
    with pytest.raises(PrivacyError):
        wrapped.step(lambda m, x: m(x).squeeze(1) ** 2, torch.ones(32, 4))
    wrapped.reserve(40)
    assert ledger.events == (DPSGDEvent(z, 0.5, 40, "shared", count_noise=s),)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        x = torch.randn(32, 4, generator=gen)
        wrapped.step(lambda m, xb: m(xb).squeeze(1) ** 2, x)
    assert wrapped.clip > 1e-3 * math.exp(0.2 * 0.5 * 20)  # every gradient was clipped at first
    assert wrapped.inner.max_grad_norm < wrapped.clip * math.exp(0.2)  # the inner step used it
    charging = _tiny_dpsgd(split_noise(z, s), 1)
    charging.ledger = ledger
    with pytest.raises(PrivacyError):  # the inner DPSGD must not charge as well
        AdaptiveClipDPSGD(inner=charging, ledger=ledger, noise_multiplier=z, count_noise=s,
                          sample_rate=0.5, expected_batch_size=32, clip=1.0, target_quantile=0.5,
                          lr=0.2, source=RandomSource.insecure_from_seed(5), artefact="shared")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("clipping", "sometimes", "privacy.clipping"),
        ("clip_quantile", 1.5, "privacy.clip_quantile"),
        ("clip_quantile", 0.0, "privacy.clip_quantile"),
        ("clip_lr", 0.0, "privacy.clip_lr"),
        ("clip_quantile_epsilon", 20.0, "privacy.clip_quantile_epsilon"),
    ],
)
def test_bad_adaptive_config_names_the_field(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        from_dict({"privacy": {"clipping": "adaptive", key: value}})


def test_adaptive_needs_exact_accounting_and_defaults_are_documented():
    with pytest.raises(ConfigError, match="accounting = exact"):
        from_dict({"privacy": {"clipping": "adaptive", "accounting": "classic"}})
    p = from_dict({}).privacy
    assert (p.clipping, p.clip_quantile, p.clip_lr, p.clip_quantile_epsilon) == ("fixed", 0.5, 0.2, None)
