"""Accountants: a list of mechanism events in, epsilon out.

Pure functions over the events of `securediff.privacy.ledger` (read by their
`kind` tag, so this module imports nothing from the ledger). Four named
accountants, each a sound upper bound:

- ``"pld"``: dp_accounting's privacy-loss-distribution accountant
  (pessimistic discretisation, interval `PLD_DISCRETIZATION`).
- ``"prv"``: Opacus' PRV accountant (Gopi et al. 2021); its `eps_upper`.
- ``"rdp"``: Opacus' RDP analysis, converted with Opacus' `get_privacy_spent`.
- ``"exact"``: the analytic Gaussian mechanism (Balle & Wang 2018), for
  events that are Gaussians without subsampling.

Every Gaussian is normalised to ``z`` = noise std / shift between neighbouring
outputs. Forward noise: shift 2C under replace-one, ``z = sigma / (2C)``,
``q = 1``. DP-SGD: shift C under add/remove, ``z = noise_multiplier``.
A quantile count: shift 1 under replace-one, ``z = noise_std``, ``q = 1``.
Randomized response is pure eps-DP under replace-one; the PLD accountant
composes it exactly, the others add its epsilon (basic composition with
(eps, 0)-DP, sound and tight for a single release).

Distributed Skellam events (the Poisson-subsampled multi-dimensional Skellam
mechanism, add/remove) have no PLD or PRV here: only ``"rdp"`` composes them,
with the paper's RDP bound under Zhu & Wang's Poisson-subsampling bound
(`skellam_accounting`), at integer orders, together with any Gaussians of the
same part (Opacus' RDP at the same integer orders); the other accountants raise
AccountantUnsupportedError for them.

Relations. Events that share one relation compose under it. dp_accounting's
PLD supports Poisson sampling only under add/remove, so a mix is handled by
converting the add/remove part to replace-one by group privacy (a replacement
is a removal then an addition: (eps, delta) becomes (2 eps, (1 + e^eps) delta))
and adding the two parts' epsilons by basic composition, delta split evenly.
This is conservative. Replace-one is never converted to add/remove.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from securediff.errors import ConfigError, PrivacyError

ACCOUNTANTS: tuple[str, ...] = ("pld", "prv", "rdp", "exact")
RELATIONS: tuple[str, ...] = ("replace_one", "add_remove")
# 1e-3 gives 2.882 for the FACTS.md DP-SGD reference (1e-4: 2.877) at 1/15 of the time.
PLD_DISCRETIZATION = 1e-3
_RDP_EXTRA_ORDERS = (80.0, 96.0, 128.0, 256.0, 512.0, 1024.0)


class AccountantUnsupportedError(PrivacyError):
    """The named accountant cannot analyse these events (e.g. "exact" on DP-SGD)."""


# -- the analytic Gaussian mechanism ------------------------------------------
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _log_phi(x: float) -> float:
    """log of the standard normal CDF, accurate far into both tails."""
    if x > 0.0:
        return math.log1p(-0.5 * math.erfc(x / math.sqrt(2.0)))
    if x > -30.0:
        return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    y = -x  # asymptotic series of Mills' ratio; relative error < 1e-11 here
    y2 = y * y
    series = 1.0 - 1.0 / y2 + 3.0 / y2**2 - 15.0 / y2**3 + 105.0 / y2**4
    return -0.5 * y2 - math.log(y) - _LOG_SQRT_2PI + math.log(series)


def gaussian_delta(*, mu: float, epsilon: float) -> float:
    """delta(eps) of a Gaussian whose neighbouring outputs are `mu` stds apart:
    Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu) (Balle & Wang 2018, Thm 8)."""
    if mu <= 0.0:
        return 0.0
    if math.isinf(mu):
        return 1.0
    log_a = _log_phi(mu / 2.0 - epsilon / mu)
    log_b = epsilon + _log_phi(-mu / 2.0 - epsilon / mu)
    if log_b >= log_a:
        return 0.0
    return math.exp(log_a) * -math.expm1(log_b - log_a)


def gaussian_epsilon(*, mu: float, delta: float) -> float:
    """The smallest epsilon with gaussian_delta(mu, eps) <= delta, by bisection
    (returns the upper end of the final bracket, so never an underestimate)."""
    _check_delta(delta)
    if mu <= 0.0:
        return 0.0
    if math.isinf(mu):
        return math.inf
    if gaussian_delta(mu=mu, epsilon=0.0) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while gaussian_delta(mu=mu, epsilon=hi) > delta:
        lo, hi = hi, 2.0 * hi
        if hi > 1e9:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if gaussian_delta(mu=mu, epsilon=mid) > delta:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return hi


# -- events -> normalised mechanisms -------------------------------------------
@dataclass(frozen=True)
class _Gaussian:
    z: float  # noise std / neighbour shift
    q: float  # Poisson sampling rate (1.0: no subsampling)
    steps: int


@dataclass(frozen=True)
class _Skellam:
    l1: float  # integer-domain sensitivities
    l2: float
    variance: float  # the noise variance that reached the aggregate
    q: float
    steps: int


@dataclass
class _Part:
    gaussians: list[_Gaussian]
    rr: list[tuple[float, int]]  # (epsilon, num_classes)
    skellams: list[_Skellam] = field(default_factory=list)


def _split(events: Sequence[Any]) -> dict[str, _Part]:
    parts = {rel: _Part([], []) for rel in RELATIONS}
    for ev in events:
        kind = getattr(ev, "kind", None)
        if kind == "forward_noise":
            parts[ev.relation].gaussians.append(_Gaussian(ev.sigma / (2.0 * ev.clip_norm), 1.0, 1))
        elif kind == "dpsgd":
            parts[ev.relation].gaussians.append(
                _Gaussian(ev.noise_multiplier, ev.sample_rate, ev.steps)
            )
        elif kind == "quantile_count":  # a count with sensitivity 1
            parts[ev.relation].gaussians.append(_Gaussian(ev.noise_std, 1.0, ev.steps))
        elif kind == "distributed_skellam":
            parts[ev.relation].skellams.append(
                _Skellam(ev.l1_sensitivity, ev.l2_sensitivity, ev.noise_variance, ev.sample_rate,
                         ev.steps)
            )
        elif kind == "randomized_response":
            parts[ev.relation].rr.append((ev.epsilon, ev.num_classes))
        else:
            raise PrivacyError(f"unknown mechanism event {ev!r}")
    return parts


def _eps_of_delta(part: _Part, *, relation: str, accountant: str) -> Callable[[float], float]:
    """Build the accountant once; return delta -> epsilon for this part."""
    pure = math.fsum(eps for eps, _ in part.rr)
    gs = part.gaussians
    if part.skellams:
        return _rdp_with_skellam(part, accountant=accountant, pure=pure)
    if accountant == "pld":
        return _pld(part, relation=relation)
    if not gs:
        return lambda _delta: pure
    if accountant == "rdp":
        from opacus.accountants import RDPAccountant
        from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

        orders = [*RDPAccountant.DEFAULT_ALPHAS, *_RDP_EXTRA_ORDERS]
        rdp = sum(
            np.asarray(compute_rdp(q=g.q, noise_multiplier=g.z, steps=g.steps, orders=orders))
            for g in gs
        )
        return lambda d: float(get_privacy_spent(orders=orders, rdp=rdp, delta=d)[0]) + pure
    if accountant == "prv":
        from opacus.accountants import PRVAccountant

        def prv(d: float) -> float:
            acc = PRVAccountant()
            acc.history = [(g.z, g.q, g.steps) for g in gs]
            with np.errstate(divide="ignore", invalid="ignore"):  # log(1 - q) at q = 1
                try:
                    return float(acc.get_epsilon(d)) + pure
                except ValueError:
                    # Opacus' PRV refuses deltas below its floating-point floor (as group
                    # privacy asks for): no certificate there, which is what inf says.
                    return math.inf

        return prv
    if accountant == "exact":
        if any(g.q != 1.0 for g in gs):
            raise AccountantUnsupportedError(
                "the exact accountant handles Gaussians without subsampling only; "
                "use pld, prv or rdp for DP-SGD"
            )
        mu = math.sqrt(math.fsum(g.steps / g.z**2 for g in gs))
        return lambda d: gaussian_epsilon(mu=mu, delta=d) + pure
    raise ConfigError(f"unknown accountant {accountant!r}; expected one of {ACCOUNTANTS}")


@lru_cache(maxsize=256)
def _skellam_step_rdp(l1: float, l2: float, variance: float, q: float) -> np.ndarray:
    """Per-step RDP at SKELLAM_ORDERS; cached because a ledger re-composes its
    events at every charge."""
    from securediff.privacy.skellam_accounting import SKELLAM_ORDERS, subsampled_skellam_rdp

    rdp = subsampled_skellam_rdp(l1=l1, l2=l2, variance=variance, sample_rate=q,
                                 orders=SKELLAM_ORDERS)
    rdp.setflags(write=False)
    return rdp


def _rdp_with_skellam(part: _Part, *, accountant: str, pure: float) -> Callable[[float], float]:
    """RDP composition of Skellam events with the part's Gaussians, at integer orders."""
    if accountant != "rdp":
        raise AccountantUnsupportedError(
            f"the {accountant} accountant cannot analyse distributed Skellam events; "
            "use the rdp accountant (Skellam RDP bound, Zhu-Wang Poisson subsampling)"
        )
    from opacus.accountants.analysis.rdp import compute_rdp

    from securediff.privacy.skellam_accounting import SKELLAM_ORDERS, rdp_to_epsilon

    orders = [float(a) for a in SKELLAM_ORDERS]
    rdp = np.zeros(len(orders))
    for sk in part.skellams:
        rdp = rdp + sk.steps * _skellam_step_rdp(sk.l1, sk.l2, sk.variance, sk.q)
    for g in part.gaussians:
        rdp = rdp + np.asarray(compute_rdp(q=g.q, noise_multiplier=g.z, steps=g.steps, orders=orders))
    return lambda d: rdp_to_epsilon(rdp, SKELLAM_ORDERS, d) + pure


def _pld(part: _Part, *, relation: str) -> Callable[[float], float]:
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    replace = relation == "replace_one"
    rel = dp_accounting.NeighboringRelation
    acc = PLDAccountant(
        rel.REPLACE_ONE if replace else rel.ADD_OR_REMOVE_ONE,
        value_discretization_interval=PLD_DISCRETIZATION,
    )
    events: list[Any] = []
    for g in part.gaussians:
        if g.q == 1.0:
            # Under REPLACE_ONE dp_accounting takes the multiplier relative to a
            # per-record norm bound, i.e. to half the neighbour shift.
            inner = dp_accounting.GaussianDpEvent(2.0 * g.z if replace else g.z)
        elif replace:
            raise AccountantUnsupportedError("PLD: Poisson sampling under replace-one")
        else:
            inner = dp_accounting.PoissonSampledDpEvent(g.q, dp_accounting.GaussianDpEvent(g.z))
        events.append(dp_accounting.SelfComposedDpEvent(inner, g.steps))
    for eps, k in part.rr:
        p = k / (math.exp(eps) + k - 1.0)  # k-ary RR as "uniform with probability p"
        events.append(dp_accounting.RandomizedResponseDpEvent(noise_parameter=p, num_buckets=k))
    if not events:
        return lambda _delta: 0.0
    acc.compose(dp_accounting.ComposedDpEvent(events))
    return lambda d: float(acc.get_epsilon(d))


def _replace_one_from_add_remove(eps_of_delta: Callable[[float], float], delta: float) -> float:
    """Group privacy: the smallest eps_a found with eps_of_delta(d_a) <= eps_a where
    (1 + e^eps_a) d_a = delta; returns 2 eps_a (math.inf if the iteration cannot
    certify one, which happens only far beyond any useful epsilon)."""
    margin = 1e-6
    eps = eps_of_delta(delta / 2.0)  # 1 + e^eps >= 2, so a lower bound
    for _ in range(200):
        if eps > 700.0:
            return math.inf
        needed = eps_of_delta(delta / (1.0 + math.exp(eps)))
        if needed <= eps:
            return 2.0 * eps
        eps = needed + margin
    return math.inf


# -- public API -------------------------------------------------------------------
def _check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")


def check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"unknown accountant {accountant!r}; expected one of {ACCOUNTANTS}")
    return accountant


def compose_epsilon(
    events: Sequence[Any], *, delta: float, accountant: str = "pld", relation: str | None = None
) -> float:
    """Epsilon at `delta` of all `events` composed, under `relation` (default:
    replace-one if any event is replace-one, else add/remove). No events: 0.0."""
    _check_delta(delta)
    check_accountant(accountant)
    if relation is not None and relation not in RELATIONS:
        raise ConfigError(f"unknown relation {relation!r}; expected one of {RELATIONS}")
    if not events:
        return 0.0
    parts = _split(events)
    ro, ar = parts["replace_one"], parts["add_remove"]
    has_ro = bool(ro.gaussians or ro.rr or ro.skellams)
    has_ar = bool(ar.gaussians or ar.rr or ar.skellams)
    target = relation or ("replace_one" if has_ro else "add_remove")
    if target == "add_remove":
        if has_ro:
            raise PrivacyError(
                "replace-one events cannot be converted to add/remove; "
                "account under replace_one instead"
            )
        return _eps_of_delta(ar, relation="add_remove", accountant=accountant)(delta)
    if not has_ar:
        return _eps_of_delta(ro, relation="replace_one", accountant=accountant)(delta)
    ar_fn = _eps_of_delta(ar, relation="add_remove", accountant=accountant)
    if not has_ro:
        return _replace_one_from_add_remove(ar_fn, delta)
    ro_eps = _eps_of_delta(ro, relation="replace_one", accountant=accountant)(delta / 2.0)
    return ro_eps + _replace_one_from_add_remove(ar_fn, delta / 2.0)


def dpsgd_epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "pld",
) -> float:
    """Epsilon (add/remove) of `steps` Poisson-subsampled Gaussian steps."""
    _check_dpsgd(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    _check_delta(delta)
    check_accountant(accountant)
    part = _Part([_Gaussian(noise_multiplier, sample_rate, steps)], [])
    return _eps_of_delta(part, relation="add_remove", accountant=accountant)(delta)


def _check_dpsgd(*, noise_multiplier: float, sample_rate: float, steps: int) -> None:
    if not (noise_multiplier > 0.0 and math.isfinite(noise_multiplier)):
        raise ConfigError(f"noise_multiplier must be positive and finite, got {noise_multiplier}")
    if not 0.0 < sample_rate <= 1.0:
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "pld",
    rel_tol: float = 1e-4,
) -> float:
    """The smallest noise multiplier (to `rel_tol`) whose epsilon is <= target;
    bisection over sigma, returning the upper (safe) end of the bracket."""
    if not (target_epsilon > 0.0 and math.isfinite(target_epsilon)):
        raise ConfigError(f"target_epsilon must be positive and finite, got {target_epsilon}")

    def eps(sigma: float) -> float:
        return dpsgd_epsilon(
            noise_multiplier=sigma,
            sample_rate=sample_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
        )

    lo, hi = 0.5, 1.0  # invariant once bracketed: eps(lo) > target >= eps(hi)
    while eps(hi) > target_epsilon:
        lo, hi = hi, 2.0 * hi
        if hi > 1e4:
            raise ConfigError(
                f"no noise multiplier up to 1e4 reaches epsilon {target_epsilon} "
                f"(q={sample_rate}, steps={steps}, delta={delta})"
            )
    while lo > 1e-3 and eps(lo) <= target_epsilon:
        lo, hi = lo / 2.0, lo
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        if eps(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
