"""The statistics release: sensitivities never exceeded and attained, epsilon
against an independent analytic Gaussian, exact decoding without noise, draws
from injected generators only."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from securediff.data.tint import apply_tint
from securediff.errors import ConfigError
from securediff.privacy.accountants import compose
from securediff.privacy.ledger import PrivacyLedger
from securediff.privacy.skellam import decode_sum, encode_share
from securediff.privacy.skellam_accounting import skellam_epsilon
from securediff.privacy.stats_decode import decode, draw_samples
from securediff.privacy.stats_release import (
    Projection,
    StatsLayout,
    clip_features,
    colour_normalised_grey,
    contribution,
    identity,
    plan_gaussian_stats,
    plan_skellam_stats,
    svec,
    svec_inverse,
)
from securediff.rng import RandomSource

DELTA = 1e-5


def _orthonormal(r: int, d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, r)))
    return q.T


@st.composite
def _cases(draw):
    d = draw(st.integers(1, 6))
    k = draw(st.integers(1, 4))
    n = draw(st.integers(1, 7))
    r = draw(st.one_of(st.none(), st.integers(1, d)))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    layout = StatsLayout(num_classes=k, dim=d, clip_norm=draw(st.sampled_from([0.5, 1.0, 3.0])),
                         moment_projection=None if r is None else _orthonormal(r, d, seed),
                         sum_weight=draw(st.floats(0.1, 3.0)), moment_weight=draw(st.floats(0.1, 3.0)))
    features = rng.normal(size=(n, d)) * scale
    labels = rng.integers(0, k, n)
    new = rng.normal(size=(1, d)) * scale
    return layout, features, labels, new, int(rng.integers(0, k)), int(rng.integers(0, n))


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_sensitivity_never_exceeded(case):
    layout, f, y, new, new_label, i = case
    full = contribution(f, y, layout)
    removed = contribution(np.delete(f, i, 0), np.delete(y, i), layout)
    f2, y2 = f.copy(), y.copy()
    f2[i], y2[i] = new[0], new_label
    replaced = contribution(f2, y2, layout)
    tol = 1 + 1e-9
    assert np.linalg.norm(full - removed) <= layout.l2_add_remove * tol
    assert np.abs(full - removed).sum() <= layout.l1_add_remove * tol
    assert np.linalg.norm(full - replaced) <= layout.l2_replace_one * tol
    assert np.abs(full - replaced).sum() <= layout.l1_replace_one * tol


def _independent_replace_one(a: float, b: float) -> float:
    """max over the angle of two unit records in one class (a different class gives
    2a + 2b, never more): 2a(1 - t) + 2b(1 - t^2), on a fine grid."""
    t = np.linspace(-1.0, 1.0, 200_001)
    return math.sqrt(max(float(np.max(2 * a * (1 - t) + 2 * b * (1 - t * t))), 2 * a + 2 * b))


@pytest.mark.parametrize("ws, wm", [(1.0, 1.0), (0.3, 2.0), (2.0, 0.5), (1.0, 0.1)])
def test_sensitivities_attained(ws, wm):
    d, c = 4, 2.5
    layout = StatsLayout(num_classes=3, dim=d, clip_norm=c, sum_weight=ws, moment_weight=wm)
    assert layout.l2_replace_one == pytest.approx(_independent_replace_one(ws * ws, wm * wm), rel=1e-6)
    # add/remove: a record of norm C with equal magnitudes attains L2 and L1
    u = np.full((1, d), c / math.sqrt(d))
    rest = np.random.default_rng(1).normal(size=(5, d))
    y = np.array([0, 1, 2, 0, 1])
    base = contribution(rest, y, layout)
    added = contribution(np.vstack([rest, u]), np.append(y, 2), layout)
    assert np.linalg.norm(added - base) == pytest.approx(layout.l2_add_remove, rel=1e-9)
    assert np.abs(added - base).sum() == pytest.approx(layout.l1_add_remove, rel=1e-9)
    # replace-one: the worst angle, found by search over pairs in the plane
    best = 0.0
    for theta in np.linspace(0.0, math.pi, 721):
        v = c * np.array([[math.cos(theta), math.sin(theta), 0.0, 0.0]])
        e = np.array([[c, 0.0, 0.0, 0.0]])
        one = contribution(np.vstack([rest, e]), np.append(y, 0), layout)
        two = contribution(np.vstack([rest, v]), np.append(y, 0), layout)
        best = max(best, float(np.linalg.norm(one - two)))
    assert layout.l2_replace_one * 0.97 <= best <= layout.l2_replace_one * (1 + 1e-9)


def test_projected_moment_attains_add_remove():
    p = _orthonormal(2, 5, 3)
    layout = StatsLayout(num_classes=2, dim=5, clip_norm=1.0, moment_projection=p)
    assert layout.size == 2 * 5 + 3 + 1
    for u in (p[0], np.linalg.svd(p)[2][-1]):  # in the span of P, and orthogonal to it
        v = contribution(u[None, :] * 4.0, np.array([1]), layout)
        assert np.linalg.norm(v) == pytest.approx(layout.l2_add_remove, rel=1e-9)


def analytic_gaussian_epsilon(shift: float, sigma: float, delta: float) -> float:
    """Balle & Wang 2018, Thm 8, written here independently of the project."""
    def dlt(eps: float) -> float:
        return (norm.cdf(shift / (2 * sigma) - eps * sigma / shift)
                - math.exp(eps) * norm.cdf(-shift / (2 * sigma) - eps * sigma / shift))

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if dlt(mid) > delta else (lo, mid)
    return hi


@pytest.mark.parametrize("relation", ["add_remove", "replace_one"])
def test_gaussian_release_epsilon_matches_analytic(relation):
    ws, wm = 0.7, 1.3
    layout = StatsLayout(num_classes=10, dim=8, clip_norm=4.0, sum_weight=ws, moment_weight=wm)
    plan = plan_gaussian_stats(layout, target_epsilon=3.0, delta=DELTA, relation=relation,
                               accountant="exact")
    event = plan.event()
    assert event.relation == relation  # the claim is stated under the calibration's relation
    shifts = {"add_remove": math.sqrt(ws**2 + wm**2),
              "replace_one": _independent_replace_one(ws**2, wm**2)}
    for rel, shift in shifts.items():
        expected = analytic_gaussian_epsilon(shift, plan.noise_std, DELTA)
        # the same mechanism under the other relation: an event stated under it
        got = compose([replace(event, relation=rel)], delta=DELTA, accountant="exact", relation=rel)
        if rel == "replace_one":  # stated under add/remove, converted directly: the same figure
            via = compose([replace(event, relation="add_remove")], delta=DELTA, accountant="exact",
                          relation=rel)
            assert via.epsilon == pytest.approx(got.epsilon, rel=1e-9)
        assert (got.relation, got.method) == (rel, "direct")
        assert got.epsilon == pytest.approx(expected, rel=1e-5)
        pld = compose([replace(event, relation=rel)], delta=DELTA, accountant="pld", relation=rel).epsilon
        assert expected * (1 - 1e-6) <= pld <= expected * 1.01
    assert compose([event], delta=DELTA, accountant="exact", relation=relation).epsilon <= 3.0
    assert compose([event], delta=DELTA, accountant="exact", relation=relation).epsilon >= 2.99


def test_skellam_release_accounted_under_both_relations():
    layout = StatsLayout(num_classes=3, dim=6, clip_norm=1.0)
    plan = plan_skellam_stats(layout, target_epsilon=4.0, delta=DELTA, relation="replace_one",
                              min_survivors=4, max_clients=5, total_records=500)
    event = plan.event(survivors=4)
    (l1, l2), (l1r, l2r) = plan.sensitivities_add_remove, plan.sensitivities_replace_one
    gamma, dim = plan.skellam.scale, layout.size
    assert l2 == pytest.approx(gamma * layout.l2_add_remove + math.sqrt(dim))
    assert l2r == pytest.approx(gamma * layout.l2_replace_one + math.sqrt(dim))
    assert event.relation == "replace_one"  # calibrated under it: its claim is stated under it
    ar = compose([replace(event, relation="add_remove")], delta=DELTA, accountant="rdp")
    ro = compose([event], delta=DELTA, accountant="rdp")
    assert ar.epsilon == pytest.approx(skellam_epsilon(l1=l1, l2=l2, variance=event.noise_variance,
                                                       sample_rate=1.0, steps=1, delta=DELTA))
    assert ro.epsilon == pytest.approx(skellam_epsilon(l1=l1r, l2=l2r, variance=event.noise_variance,
                                                       sample_rate=1.0, steps=1, delta=DELTA))
    assert ro.method == "direct" and 3.99 <= ro.epsilon <= 4.0 and ar.epsilon < ro.epsilon
    # tighter than doubling the add/remove shift
    assert ro.epsilon < skellam_epsilon(l1=2 * l1, l2=2 * l2, variance=event.noise_variance,
                                        sample_rate=1.0, steps=1, delta=DELTA)
    ledger = PrivacyLedger(client_id="c0", budget_epsilon=10.0, delta=DELTA, accountant="rdp")
    assert ledger.charge(event) == pytest.approx(ro.epsilon)
    # stated under add/remove, the same release converts directly to the same replace-one figure
    assert compose([replace(event, relation="add_remove")], delta=DELTA, accountant="rdp",
                   relation="replace_one").epsilon == pytest.approx(ro.epsilon, rel=1e-9)
    assert PrivacyLedger.from_json(ledger.to_json()).events == (event,)


def test_skellam_shares_decode_to_the_sum():
    layout = StatsLayout(num_classes=2, dim=3, clip_norm=1.0)
    plan = plan_skellam_stats(layout, target_epsilon=50.0, delta=DELTA, relation="add_remove",
                              min_survivors=2, max_clients=3, total_records=30)
    rng = np.random.default_rng(0)
    parts = [contribution(rng.normal(size=(10, 3)), rng.integers(0, 2, 10), layout) for _ in range(3)]
    src = RandomSource.insecure_from_seed(7)
    shares = [encode_share(p, plan.skellam, src.child(str(i))) for i, p in enumerate(parts)]
    noisy = decode_sum(np.sum(shares, axis=0), plan.skellam)
    std = math.sqrt(3 * plan.skellam.share_variance + 3) / plan.skellam.scale
    assert np.abs(noisy - np.sum(parts, axis=0)).max() < 8 * std


@pytest.mark.parametrize("rank", [None, 3])
def test_decoding_without_noise_is_exact(rank):
    d, k, c = 5, 3, 2.0
    p = None if rank is None else _orthonormal(rank, d, 11)
    layout = StatsLayout(num_classes=k, dim=d, clip_norm=c, moment_projection=p,
                         sum_weight=0.5, moment_weight=2.0)
    rng = np.random.default_rng(2)
    f = rng.normal(size=(40, d)) * 1.5
    y = rng.integers(0, k, 40)
    counts = np.bincount(y, minlength=k)
    stats = decode(contribution(f[:25], y[:25], layout) + contribution(f[25:], y[25:], layout),
                   layout, counts)
    u = clip_features(f, c)
    means = np.stack([u[y == j].mean(0) for j in range(k)])
    np.testing.assert_allclose(stats.sums, np.stack([u[y == j].sum(0) for j in range(k)]), atol=1e-12)
    np.testing.assert_allclose(stats.means, means, atol=1e-12)
    centred = u - means[y]
    within = centred.T @ centred / len(y)
    if p is None:
        np.testing.assert_allclose(stats.second_moment, u.T @ u, atol=1e-12)
        np.testing.assert_allclose(stats.covariance, within, atol=1e-12)
    else:
        np.testing.assert_allclose(stats.second_moment, p @ u.T @ u @ p.T, atol=1e-12)
        np.testing.assert_allclose(p @ stats.covariance @ p.T, p @ within @ p.T, atol=1e-12)
        assert np.trace(stats.covariance) == pytest.approx(np.trace(within), rel=1e-12)


def test_noisy_covariance_is_psd():
    layout = StatsLayout(num_classes=2, dim=6, clip_norm=1.0)
    plan = plan_gaussian_stats(layout, target_epsilon=1.0, delta=DELTA, relation="replace_one")
    rng = np.random.default_rng(0)
    f, y = rng.normal(size=(20, 6)), rng.integers(0, 2, 20)
    noisy = plan.noised(contribution(f, y, layout), RandomSource.insecure_from_seed(3))
    stats = decode(noisy, layout, np.bincount(y, minlength=2), min_eigenvalue=1e-4)
    assert np.linalg.eigvalsh(stats.covariance).min() >= 1e-4 - 1e-12


def test_draws_reproducible_and_independent_of_global_rng():
    layout = StatsLayout(num_classes=2, dim=3, clip_norm=1.0)
    rng = np.random.default_rng(5)
    f, y = rng.normal(size=(30, 3)), rng.integers(0, 2, 30)
    stats = decode(contribution(f, y, layout), layout, np.bincount(y, minlength=2))
    labels = np.array([0, 1, 1, 0, 1])
    np.random.seed(1)
    torch.manual_seed(1)
    a = draw_samples(stats, labels, generator=np.random.default_rng(9))
    ta = draw_samples(stats, labels, generator=torch.Generator().manual_seed(9))
    np.random.seed(2)
    torch.manual_seed(2)
    np.random.standard_normal(7)
    torch.randn(7)
    np.testing.assert_array_equal(a, draw_samples(stats, labels, generator=np.random.default_rng(9)))
    np.testing.assert_array_equal(ta, draw_samples(stats, labels,
                                                   generator=torch.Generator().manual_seed(9)))
    assert not np.array_equal(a, draw_samples(stats, labels, generator=np.random.default_rng(10)))
    many = draw_samples(stats, np.zeros(20_000, dtype=np.int64), generator=np.random.default_rng(0))
    np.testing.assert_allclose(many.mean(0), stats.means[0], atol=0.02)
    np.testing.assert_allclose(np.cov(many.T), stats.covariance, atol=0.02)
    with pytest.raises(ConfigError):
        draw_samples(stats, labels, generator=None)  # type: ignore[arg-type]


def test_feature_maps():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.uniform(-1, 1, size=(4, 1, 6, 6)), 3, axis=1)
    tinted = apply_tint(grey, np.array([0.9, 0.4, 0.7]))
    np.testing.assert_allclose(colour_normalised_grey(tinted), colour_normalised_grey(grey), atol=1e-2)
    out = colour_normalised_grey(grey)
    assert out.shape == (4, 36)
    np.testing.assert_allclose(out.mean(1), 0.0, atol=1e-12)
    # each record's features depend on that record only
    np.testing.assert_array_equal(colour_normalised_grey(grey[:1]), out[:1])
    w = rng.normal(size=(3, 108))
    proj = Projection(matrix=w, offset=np.full(108, 0.5))
    np.testing.assert_allclose(proj(grey), (identity(grey) - 0.5) @ w.T)
    a = rng.normal(size=(4, 4))
    sym = a + a.T
    assert np.linalg.norm(svec(sym)) == pytest.approx(np.linalg.norm(sym))
    np.testing.assert_allclose(svec_inverse(svec(sym), 4), sym)


def test_layout_refuses_a_non_orthonormal_projection():
    with pytest.raises(ConfigError):
        StatsLayout(num_classes=2, dim=3, clip_norm=1.0, moment_projection=2.0 * np.eye(3)[:2])


def _papers_skellam_release_epsilon(*, w_s: float, w_m: float, dim: int, gamma: float, size: int,
                                    variance: float, relation: str, delta: float) -> float:
    """The release's epsilon from the formulas alone, not through the library:
    sensitivities of the packed vector (docs/stats_release.md; full moment, r = d),
    their integer versions under the shared rounding uniforms (Delta2 = gamma Delta2 +
    sqrt(D), Delta1 = min(gamma Delta1 + D, sqrt(D) Delta2, Delta2^2)), Agarwal, Kairouz
    & Liu (2021)'s Skellam RDP at integer orders 2..256, Balle et al. (2020)'s conversion."""
    a_, b_ = w_s * w_s, w_m * w_m
    if relation == "add_remove":
        l2 = math.sqrt(a_ + b_)
        l1 = w_s * math.sqrt(dim) + w_m * (1 + (dim - 1) / math.sqrt(2))
    else:
        l2 = math.sqrt(2 * a_ + 2 * b_ + a_ * a_ / (2 * b_)) if a_ <= 2 * b_ else 2 * math.sqrt(a_)
        l1 = 2 * (w_s * math.sqrt(dim) + w_m * (1 + (dim - 1) / math.sqrt(2)))
    d2 = gamma * l2 + math.sqrt(size)
    d1 = min(gamma * l1 + size, math.sqrt(size) * d2, d2 * d2)
    return skellam_epsilon_from_integer_sensitivities(d1, d2, variance=variance, delta=delta)


def skellam_epsilon_from_integer_sensitivities(d1: float, d2: float, *, variance: float, delta: float) -> float:
    """One unsubsampled Skellam release: Agarwal, Kairouz & Liu (2021)'s RDP at
    integer orders 2..256 and Balle et al. (2020)'s conversion, written here
    independently of the project."""
    a = np.arange(2, 257, dtype=np.float64)
    rdp = a * d2 * d2 / (2 * variance) + np.minimum(
        ((2 * a - 1) * d2 * d2 + 6 * d1) / (4 * variance * variance), 3 * d1 / (2 * variance))
    eps = rdp + np.log((a - 1) / a) - (math.log(delta) + np.log(a)) / (a - 1)
    return float(max(0.0, eps.min()))


@pytest.mark.parametrize(("w_s", "w_m"), [(1.0, 1.0), (1.0, 0.4), (0.5, 1.5)])
def test_skellam_release_epsilon_matches_an_independent_computation(w_s, w_m):
    layout = StatsLayout(num_classes=3, dim=16, clip_norm=2.0, sum_weight=w_s, moment_weight=w_m)
    plan = plan_skellam_stats(layout, target_epsilon=4.0, delta=DELTA, relation="replace_one",
                              min_survivors=4, max_clients=6, total_records=240)
    for survivors in (4, 6):  # the floor charge, and the settled one with every share
        event = plan.event(survivors=survivors)
        for relation in ("add_remove", "replace_one"):
            expected = _papers_skellam_release_epsilon(
                w_s=w_s, w_m=w_m, dim=16, gamma=plan.skellam.scale, size=layout.size,
                variance=survivors * plan.skellam.share_variance, relation=relation, delta=DELTA)
            got = compose([replace(event, relation=relation)], delta=DELTA, accountant="rdp",
                          relation=relation).epsilon
            assert got == pytest.approx(expected, rel=1e-6), (survivors, relation, got, expected)
