"""The Skellam mechanism of distributed DP: sampler, encoding, plan, accounting, ledger."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import ive

from securediff.errors import ConfigError
from securediff.privacy.accountants import (
    AccountantUnsupportedError,
    compose_epsilon,
    dpsgd_epsilon,
)
from securediff.privacy.ledger import (
    DistributedSkellamEvent,
    DPSGDEvent,
    ForwardNoiseEvent,
    PrivacyLedger,
    event_from_dict,
)
from securediff.privacy.skellam import (
    ModulusTooSmallError,
    NoiseFloorError,
    SkellamPlan,
    check_noise_floor,
    decode_sum,
    encode_share,
    integer_sensitivities,
    plan_skellam,
    realized_variance,
    sample_skellam,
)
from securediff.privacy.skellam_accounting import (
    NUMERIC_ORDERS,
    _debye_log_pmf,
    calibrate_skellam_noise,
    numeric_skellam_epsilon,
    numeric_subsampled_rdp,
    skellam_epsilon,
    skellam_log_pmf,
    subsampled_skellam_rdp,
)
from securediff.rng import RandomSource

DELTA = 1e-5


# -- the sum of the shares is the Skellam the accountant assumes --------------------------------
@pytest.mark.parametrize(
    ("clients", "share_variance"),
    [(4, 0.75), (3, 25.0), (5, 2000.0)],  # Poisson means 0.375 (arrivals), 12.5 and 1000 (PTRS)
)
def test_summed_shares_fit_the_skellam_pmf(clients: int, share_variance: float) -> None:
    source = RandomSource.insecure_from_seed(11)
    draws = 200_000
    total = sum(sample_skellam(share_variance, draws, source.child(f"c{i}")) for i in range(clients))
    variance = clients * share_variance
    sd = math.sqrt(variance)
    assert abs(total.mean()) < 5 * sd / math.sqrt(draws)
    assert abs(total.var() / variance - 1) < 5 * math.sqrt((2 + 1 / variance) / draws)
    # chi-square over integer cells, the tails pooled so every cell expects >= 20 draws
    lo, hi = int(total.min()), int(total.max())
    support = np.arange(lo, hi + 1)
    pmf = stats.skellam.pmf(support, variance / 2, variance / 2)
    observed = np.bincount(total - lo, minlength=support.size).astype(float)
    expected = pmf * draws
    edges, acc = [], 0.0
    for i, e in enumerate(expected):
        acc += e
        if acc >= 20:
            edges.append(i + 1)
            acc = 0.0
    edges[-1] = support.size
    obs = np.add.reduceat(observed, [0, *edges[:-1]])
    exp = np.add.reduceat(expected, [0, *edges[:-1]])
    exp[0] += stats.skellam.cdf(lo - 1, variance / 2, variance / 2) * draws
    exp[-1] += stats.skellam.sf(hi, variance / 2, variance / 2) * draws
    assert obs.size > 5
    _, p_value = stats.chisquare(obs, exp * obs.sum() / exp.sum())
    assert p_value > 1e-3


def test_sampler_refuses_bad_variance() -> None:
    with pytest.raises(ConfigError):
        sample_skellam(-1.0, 3, RandomSource.insecure_from_seed(0))
    assert not sample_skellam(0.0, 5, RandomSource.insecure_from_seed(0)).any()


# -- encode / decode ---------------------------------------------------------------------------
def _plan(**overrides) -> SkellamPlan:
    base = dict(dim=2000, l2_clip=1.0, scale=300.0, modulus_bits=30, noise_variance=0.0,
                min_survivors=4, max_clients=5, expected_batch=10.0, wrap_probability=0.0)
    return SkellamPlan(**{**base, **overrides})


def _aggregate(plan: SkellamPlan, sums: list[np.ndarray], seed: int) -> np.ndarray:
    source = RandomSource.insecure_from_seed(seed)
    shares = [encode_share(s, plan, source.child(f"client{i}")) for i, s in enumerate(sums)]
    half = 2 ** (plan.modulus_bits - 1)
    for share in shares:
        assert share.dtype == np.int64 and share.min() >= -half and share.max() < half
    return decode_sum(np.sum(shares, axis=0), plan)  # secagg returns the exact integer sum


def test_round_trip_without_noise_is_within_one_step_per_client() -> None:
    plan = _plan()
    rng = np.random.Generator(np.random.PCG64(1))  # test data only, no privacy rests on it
    sums = [rng.normal(0, 2.0, plan.dim) for _ in range(5)]
    err = _aggregate(plan, sums, seed=2) - np.sum(sums, axis=0)
    assert np.abs(err).max() <= 5 / plan.scale
    assert abs(err.mean()) < 5 * math.sqrt(5 / 4 / plan.dim) / plan.scale  # unbiased rounding


def test_round_trip_noise_has_the_planned_variance() -> None:
    plan = _plan(noise_variance=4.0e4)  # share variance 1e4 for the floor of 4 clients
    rng = np.random.Generator(np.random.PCG64(3))
    sums = [rng.normal(0, 2.0, plan.dim) for _ in range(5)]
    err = (_aggregate(plan, sums, seed=4) - np.sum(sums, axis=0)) * plan.scale
    expected = realized_variance(plan, 5)  # five shares reached the sum
    assert expected == pytest.approx(5e4)
    rounding = 5 / 4  # at most 1/4 per client
    assert abs(err.var() - expected) < 5 * expected * math.sqrt(2 / plan.dim) + rounding


def test_a_wrapped_aggregate_decodes_modulo_2_to_the_b() -> None:
    plan = _plan(dim=3, scale=1.0, modulus_bits=8)
    sums = [np.array([100.0, 100.0, -30.0]), np.array([100.0, 27.0, -30.0])]
    decoded = _aggregate(plan, sums, seed=5)
    true = np.array([200, 127, -60])
    assert decoded.tolist() == (((true + 128) % 256) - 128).tolist() == [-56, 127, -60]


def test_encode_refuses_a_wrong_vector() -> None:
    source = RandomSource.insecure_from_seed(0)
    with pytest.raises(ConfigError):
        encode_share(np.zeros(3), _plan(), source)
    with pytest.raises(ConfigError):
        encode_share(np.full(2000, np.nan), _plan(), source)


# -- the plan ---------------------------------------------------------------------------------------
def test_plan_follows_its_rules_and_picks_the_smallest_modulus() -> None:
    kw = dict(dim=600_000, l2_clip=1.0, noise_multiplier=1.0, min_survivors=8, max_clients=10,
              expected_batch=1000.0)
    plan = plan_skellam(**kw)
    assert math.sqrt(plan.dim) == pytest.approx(0.01 * plan.scale * plan.l2_clip)
    l1, l2 = integer_sensitivities(dim=plan.dim, l2_clip=1.0, scale=plan.scale)
    assert (plan.l1_sensitivity, plan.l2_sensitivity) == (l1, l2)
    assert plan.noise_variance == pytest.approx(l2**2)
    assert plan.noise_multiplier == pytest.approx(1.01)  # sqrt(V) / (gamma C)
    assert plan.share_variance == pytest.approx(plan.noise_variance / 8)
    assert plan.wrap_probability <= 1e-9
    assert plan.secagg_value_bits == plan.modulus_bits + 1 <= 48
    with pytest.raises(ModulusTooSmallError):
        plan_skellam(**kw, bits=plan.modulus_bits - 1)
    with pytest.raises(ModulusTooSmallError):
        plan_skellam(**{**kw, "expected_batch": 1e12})


def test_dropouts_lower_the_variance_and_the_floor_is_enforced() -> None:
    plan = plan_skellam(dim=1000, l2_clip=1.0, noise_multiplier=1.0, min_survivors=3,
                        max_clients=5, expected_batch=50.0)
    assert realized_variance(plan, 3) == pytest.approx(plan.noise_variance)
    check_noise_floor(plan, 3)
    with pytest.raises(NoiseFloorError):
        check_noise_floor(plan, 2)
    eps = [
        skellam_epsilon(l1=plan.l1_sensitivity, l2=plan.l2_sensitivity,
                        variance=realized_variance(plan, n), sample_rate=0.05, steps=200,
                        delta=DELTA)
        for n in (5, 4, 3, 2)
    ]
    assert eps == sorted(eps) and eps[0] < eps[-1]


# -- accounting -----------------------------------------------------------------------------------
def test_log_pmf_matches_scipy() -> None:
    k = np.arange(-80, 81)
    for variance in (3.0, 400.0):
        ref = stats.skellam.pmf(k, variance / 2, variance / 2)
        assert np.allclose(np.exp(skellam_log_pmf(k, variance)), ref, rtol=1e-9, atol=1e-300)
    # the asymptotic branch (|k| >= 50) against scipy where scipy is representable
    k = np.arange(50, 400)
    ref = stats.skellam.logpmf(k, 200.0, 200.0)
    assert np.abs(skellam_log_pmf(k, 400.0) - ref)[np.isfinite(ref)].max() < 1e-9
    k = np.arange(1, 50)  # the expansion also holds at small |k| once the variance is large
    for variance in (1e4, 1e8):
        ref = np.log(ive(k, variance))
        assert np.abs(_debye_log_pmf(k.astype(float), variance) - ref).max() < 1e-12
    # beyond scipy's range (ive is NaN there) the pmf still sums to one
    total = np.exp(skellam_log_pmf(np.arange(-10**6, 10**6), 6.1e9)).sum()
    assert total == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("shift", "variance", "q"), [(20, 400.0, 1.0), (20, 400.0, 0.25),
                                                      (5, 25.0, 0.05), (2, 4.0, 0.25)])
def test_numeric_rdp_never_exceeds_the_primary_bound(shift: int, variance: float, q: float) -> None:
    numeric = numeric_subsampled_rdp(shift=shift, variance=variance, sample_rate=q)
    primary = subsampled_skellam_rdp(l1=shift, l2=shift, variance=variance, sample_rate=q,
                                     orders=NUMERIC_ORDERS)
    assert np.all(numeric <= primary * (1 + 1e-9))


def test_primary_is_tight_without_subsampling_and_gaussian_in_the_limit() -> None:
    # noise multiplier 2 keeps the best order >= 2 (Opacus also tries fractional orders)
    shift, variance = 200, 400.0**2
    for steps in (1, 10):
        primary = skellam_epsilon(l1=shift, l2=shift, variance=variance, sample_rate=1.0,
                                  steps=steps, delta=DELTA, orders=NUMERIC_ORDERS)
        numeric = numeric_skellam_epsilon(shift=shift, variance=variance, sample_rate=1.0,
                                          steps=steps, delta=DELTA)
        gauss = dpsgd_epsilon(noise_multiplier=2.0, sample_rate=1.0, steps=steps, delta=DELTA,
                              accountant="rdp")
        assert numeric <= primary <= 1.01 * numeric
        assert primary == pytest.approx(gauss, rel=0.01)


def test_subsampled_numeric_matches_gaussian_and_the_primary_bounds_it() -> None:
    # measured: numeric 9.118, Gaussian (Opacus RDP) 9.088, primary 12.17 (Zhu-Wang's factor 3)
    shift, q, steps = 200, 0.25, 20
    numeric = numeric_skellam_epsilon(shift=shift, variance=shift**2, sample_rate=q, steps=steps,
                                      delta=DELTA)
    primary = skellam_epsilon(l1=shift, l2=shift, variance=shift**2, sample_rate=q, steps=steps,
                              delta=DELTA)
    gauss = dpsgd_epsilon(noise_multiplier=1.0, sample_rate=q, steps=steps, delta=DELTA,
                          accountant="rdp")
    assert numeric == pytest.approx(gauss, rel=0.01)
    assert numeric <= primary <= 1.5 * numeric


def test_calibration_returns_the_smallest_safe_noise() -> None:
    def build(z: float) -> SkellamPlan:
        return plan_skellam(dim=1000, l2_clip=1.0, noise_multiplier=z, min_survivors=2,
                            max_clients=3, expected_batch=30.0)

    z = calibrate_skellam_noise(build, target_epsilon=3.0, sample_rate=0.02, steps=300,
                                delta=DELTA, rel_tol=1e-3)

    def eps(zz: float) -> float:
        p = build(zz)
        return skellam_epsilon(l1=p.l1_sensitivity, l2=p.l2_sensitivity,
                               variance=p.noise_variance, sample_rate=0.02, steps=300, delta=DELTA)

    assert eps(z) <= 3.0 < eps(z * 0.997)


# -- ledger -------------------------------------------------------------------------------------------
def _event(variance: float = 400.0, steps: int = 5) -> DistributedSkellamEvent:
    return DistributedSkellamEvent(l1_sensitivity=20.0, l2_sensitivity=20.0,
                                   noise_variance=variance, sample_rate=0.25, steps=steps,
                                   artefact="shared", scale=20.0, min_survivors=3)


def test_event_round_trip_and_validation() -> None:
    event = _event()
    assert event_from_dict(event.to_dict()) == event
    with pytest.raises(ConfigError):
        DistributedSkellamEvent(l1_sensitivity=1.0, l2_sensitivity=1.0, noise_variance=1.0,
                                sample_rate=0.1, steps=1, artefact="shared", scale=1.0,
                                min_survivors=1, relation="replace_one")


def test_ledger_composes_skellam_events_under_rdp() -> None:
    ledger = PrivacyLedger(client_id="a", budget_epsilon=50.0, delta=DELTA, accountant="rdp")
    ledger.charge(_event(steps=5))
    eps = ledger.charge(_event(steps=5))
    assert len(ledger.events) == 1 and ledger.events[0].steps == 10  # same mechanism: merged
    assert eps == pytest.approx(skellam_epsilon(l1=20.0, l2=20.0, variance=400.0, sample_rate=0.25,
                                                steps=10, delta=DELTA))
    eps_dropout = ledger.charge(_event(variance=300.0, steps=1))  # a step with a dropout
    assert eps_dropout > eps
    again = PrivacyLedger.from_json(ledger.to_json())
    assert again.epsilon("shared") == pytest.approx(eps_dropout)
    summary = ledger.summary()["artefacts"]["shared"]
    assert summary["epsilon"]["pld"] is None and summary["claimed"]["accountant"] == "rdp"
    with pytest.raises(AccountantUnsupportedError):
        ledger.epsilon("shared", accountant="pld")


def test_skellam_composes_with_dpsgd_and_forward_noise() -> None:
    sk = [_event(steps=10)]
    dpsgd = DPSGDEvent(noise_multiplier=1.0, sample_rate=0.25, steps=10, artefact="shared")
    both = compose_epsilon([*sk, dpsgd], delta=DELTA, accountant="rdp")
    alone = compose_epsilon(sk, delta=DELTA, accountant="rdp")
    assert both > max(alone, dpsgd_epsilon(noise_multiplier=1.0, sample_rate=0.25, steps=10,
                                           delta=DELTA, accountant="rdp"))
    forward = ForwardNoiseEvent(sigma=20.0, clip_norm=1.0, t0=500, data_id="x")
    mixed = compose_epsilon([*sk, forward], delta=DELTA, accountant="rdp")  # replace-one
    assert mixed > 2 * alone
