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

Relations. Events that share one relation compose under it. A replace-one
claim over add/remove events (DP-SGD, distributed Skellam) analyses them
directly under replace-one where the accountant can (`compose(...).method ==
"direct"`): a replaced record changes its clipped contribution by the
difference of two vectors of norm <= C, so an unsubsampled step's shift doubles,
and a Poisson-subsampled step is the pair (1-q) p0 + q p1 against
(1-q) p0 + q p2. ``"pld"`` takes that pair from dp_accounting's REPLACE_ONE
relation; ``"rdp"`` bounds it by `securediff.privacy.replace_one` (Gaussian
and Skellam), and also computes the group-privacy conversion and keeps the
smaller (both are sound; at moderate q the general RDP bound can lose). The
group-privacy conversion (a replacement is a removal then an addition: (eps,
delta) becomes (2 eps, (1 + e^eps) delta)), with the replace-one part's epsilon
added by basic composition at delta split evenly, is the fallback where no
direct analysis exists (``"prv"`` on subsampled steps), and then says so
(`method == "group-privacy"`). Replace-one is never converted to add/remove.
A one-off release (`gaussian_release`, `skellam_release`: no subsampling)
carries its own replace-one sensitivity, which is used instead of doubling
(docs/stats_release.md).

PLD grid. dp_accounting's pessimistic discretisation overstates epsilon by
about the grid interval per composition, which is 10% at epsilon 0.23 (z 1.244,
q 0.001, 5,000 steps) on a 1e-3 grid. `_pld` halves the interval from
2 * PLD_DISCRETIZATION until two successive grids agree within
PLD_REL_TOL, down to PLD_FINEST; every grid is an upper bound, so the finest
computed is returned. Measured (benchmarks/pld_grid.py, a loaded 2-core host):
that case 0.2507 -> 0.2290 (5e-5 grid: 0.2287) in 1.6 s against 0.30 s; where
1e-3 is already within 1% (FACTS.md's reference, 2.882) the check costs
1.6x to 1.8x; one layer-split calibration took 7.5 s against 4.1 s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from securediff.errors import ConfigError, PrivacyError

ACCOUNTANTS: tuple[str, ...] = ("pld", "prv", "rdp", "exact")
RELATIONS: tuple[str, ...] = ("replace_one", "add_remove")
# 1e-3 gives 2.882 for the FACTS.md DP-SGD reference (1e-4: 2.877) at 1/15 of the time.
PLD_DISCRETIZATION = 1e-3
PLD_REL_TOL = 0.01  # two successive grids closer than this: the finer one is kept
PLD_FINEST = 1e-4  # bounds the cost: at most 5 grids, about 15x the 1e-3 one
METHODS: tuple[str, ...] = ("direct", "group-privacy")
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
    # An add/remove step (z relative to the per-record norm bound) analysed directly
    # under replace-one: the pair (1-q) p0 + q p1 against (1-q) p0 + q p2.
    ball: bool = False
    # z under replace-one where the event bounds that shift itself (q = 1); else z / 2
    replace_z: float | None = None


@dataclass(frozen=True)
class _Skellam:
    l1: float  # integer-domain sensitivities
    l2: float
    variance: float  # the noise variance that reached the aggregate
    q: float
    steps: int
    ball: bool = False  # as _Gaussian.ball; (l1, l2) stay the add/remove sensitivities
    replace_l: tuple[float, float] | None = None  # (l1, l2) under replace-one, as replace_z


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
        # One unsubsampled release that bounds its own replace-one shift: stated under
        # add/remove, the replace-one bound rides along for a direct conversion;
        # stated under replace-one, it is analysed with that bound from the start.
        elif kind == "gaussian_release" and ev.relation == "replace_one":
            parts["replace_one"].gaussians.append(_Gaussian(ev.noise_std / ev.l2_replace_one, 1.0, 1))
        elif kind == "gaussian_release":
            parts["add_remove"].gaussians.append(_Gaussian(
                ev.noise_std / ev.l2_sensitivity, 1.0, 1, replace_z=ev.noise_std / ev.l2_replace_one))
        elif kind == "skellam_release" and ev.relation == "replace_one":
            parts["replace_one"].skellams.append(_Skellam(
                ev.l1_replace_one, ev.l2_replace_one, ev.noise_variance, 1.0, 1))
        elif kind == "skellam_release":
            parts["add_remove"].skellams.append(_Skellam(
                ev.l1_sensitivity, ev.l2_sensitivity, ev.noise_variance, 1.0, 1,
                replace_l=(ev.l1_replace_one, ev.l2_replace_one)))
        elif kind == "randomized_response":
            parts[ev.relation].rr.append((ev.epsilon, ev.num_classes))
        else:
            raise PrivacyError(f"unknown mechanism event {ev!r}")
    return parts


def _eps_of_delta(part: _Part, *, relation: str, accountant: str) -> Callable[[float], float]:
    """Build the accountant once; return delta -> epsilon for this part."""
    pure = math.fsum(eps for eps, _ in part.rr)
    gs = part.gaussians
    if part.skellams or (accountant == "rdp" and any(g.ball for g in gs)):
        return _rdp_integer(part, accountant=accountant, pure=pure)
    if accountant == "pld":
        return _pld(part, relation=relation)
    if not gs:
        return lambda _delta: pure
    if any(g.ball for g in gs):  # prv and exact have no replace-one pair of a subsampled step
        raise AccountantUnsupportedError(
            f"the {accountant} accountant has no replace-one analysis of Poisson-subsampled steps")
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


@lru_cache(maxsize=256)
def _replace_one_step_rdp(kind: str, params: tuple[float, ...], q: float) -> np.ndarray:
    """Per-step replace-one RDP at SKELLAM_ORDERS of a subsampled step (replace_one.py)."""
    from securediff.privacy.replace_one import gaussian_replace_one_rdp, skellam_replace_one_rdp
    from securediff.privacy.skellam_accounting import SKELLAM_ORDERS

    if kind == "gaussian":
        rdp = gaussian_replace_one_rdp(noise_multiplier=params[0], sample_rate=q, orders=SKELLAM_ORDERS)
    else:
        l1, l2, variance = params
        rdp = skellam_replace_one_rdp(l1=l1, l2=l2, variance=variance, sample_rate=q,
                                      orders=SKELLAM_ORDERS)
    rdp.setflags(write=False)
    return rdp


def _rdp_integer(part: _Part, *, accountant: str, pure: float) -> Callable[[float], float]:
    """RDP composition at integer orders: Skellam events, replace-one pairs of
    subsampled steps, and the part's other Gaussians (Opacus' RDP)."""
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
        if sk.ball:
            step = _replace_one_step_rdp("skellam", (sk.l1, sk.l2, sk.variance), sk.q)
        else:
            step = _skellam_step_rdp(sk.l1, sk.l2, sk.variance, sk.q)
        rdp = rdp + sk.steps * step
    for g in part.gaussians:
        if g.ball:
            rdp = rdp + g.steps * _replace_one_step_rdp("gaussian", (g.z,), g.q)
        else:
            rdp = rdp + np.asarray(compute_rdp(q=g.q, noise_multiplier=g.z, steps=g.steps,
                                               orders=orders))
    return lambda d: rdp_to_epsilon(rdp, SKELLAM_ORDERS, d) + pure


def _pld(part: _Part, *, relation: str) -> Callable[[float], float]:
    """delta -> epsilon by PLD, the grid refined as the module docstring says."""
    builds: dict[float, Callable[[float], float]] = {}

    def at(interval: float, delta: float) -> float:
        if interval not in builds:
            builds[interval] = _pld_on_grid(part, relation=relation, interval=interval)
        return builds[interval](delta)

    def eps(delta: float) -> float:
        interval = 2.0 * PLD_DISCRETIZATION
        coarse = at(interval, delta)
        while interval / 2.0 >= PLD_FINEST * (1 - 1e-9):
            interval /= 2.0
            fine = at(interval, delta)
            if not math.isfinite(fine) or abs(coarse - fine) <= PLD_REL_TOL * fine:
                return fine
            coarse = fine
        return coarse

    return eps


def _pld_on_grid(part: _Part, *, relation: str, interval: float) -> Callable[[float], float]:
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    replace_one = relation == "replace_one"
    rel = dp_accounting.NeighboringRelation
    acc = PLDAccountant(
        rel.REPLACE_ONE if replace_one else rel.ADD_OR_REMOVE_ONE,
        value_discretization_interval=interval,
    )
    events: list[Any] = []
    for g in part.gaussians:
        if g.ball:
            # dp_accounting's REPLACE_ONE pair for a Poisson-subsampled Gaussian: records
            # of norm <= 1 at noise std z, (1-q) N(0) + q N(1) against (1-q) N(0) + q N(-1).
            inner = dp_accounting.PoissonSampledDpEvent(g.q, dp_accounting.GaussianDpEvent(g.z))
        elif g.q == 1.0:
            # Under REPLACE_ONE dp_accounting takes the multiplier relative to a
            # per-record norm bound, i.e. to half the neighbour shift.
            inner = dp_accounting.GaussianDpEvent(2.0 * g.z if replace_one else g.z)
        elif replace_one:
            raise AccountantUnsupportedError("PLD: a replace-one event with Poisson sampling")
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


def _as_replace_one(part: _Part) -> _Part:
    """An add/remove part's mechanisms, to be analysed directly under replace-one.
    Unsubsampled: the shift doubles (a difference of two contributions of norm
    <= the add/remove shift), so z halves and Skellam's (l1, l2) double (triangle
    inequality), unless the event bounds the replace-one shift itself
    (`replace_z`, `replace_l`). Subsampled: marked `ball` for the replace-one pair."""
    def gaussian(g: _Gaussian) -> _Gaussian:
        if g.q != 1.0:
            return replace(g, ball=True)
        return _Gaussian(g.z / 2.0 if g.replace_z is None else g.replace_z, 1.0, g.steps)

    def skellam(sk: _Skellam) -> _Skellam:
        if sk.q != 1.0:
            return replace(sk, ball=True)
        l1, l2 = (2.0 * sk.l1, 2.0 * sk.l2) if sk.replace_l is None else sk.replace_l
        return replace(sk, l1=l1, l2=l2, replace_l=None)

    gaussians = [gaussian(g) for g in part.gaussians]
    skellams = [skellam(sk) for sk in part.skellams]
    return _Part(gaussians, list(part.rr), skellams)


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


@dataclass(frozen=True)
class Composition:
    """An epsilon, the relation it holds under, and how it was reached: "direct"
    (every event analysed under that relation) or "group-privacy" (add/remove
    events converted to replace-one by group privacy, the fallback)."""

    epsilon: float
    relation: str
    method: str


def compose(
    events: Sequence[Any], *, delta: float, accountant: str = "pld", relation: str | None = None
) -> Composition:
    """All `events` composed at `delta`, under `relation` (default: replace-one if
    any event is replace-one, else add/remove). No events: epsilon 0.

    A pure function of frozen events: a process composes the same list once (a
    ledger is asked its epsilon at every charge, check and report, a PLD build
    can take a second). Events that cannot be hashed are composed every time."""
    try:
        return _compose_once(tuple(events), float(delta), accountant, relation)
    except TypeError:  # an unhashable event
        return _compose(events, delta=delta, accountant=accountant, relation=relation)


@lru_cache(maxsize=1024)
def _compose_once(events: tuple[Any, ...], delta: float, accountant: str, relation: str | None) -> Composition:
    return _compose(events, delta=delta, accountant=accountant, relation=relation)


def _compose(
    events: Sequence[Any], *, delta: float, accountant: str, relation: str | None
) -> Composition:
    _check_delta(delta)
    check_accountant(accountant)
    if relation is not None and relation not in RELATIONS:
        raise ConfigError(f"unknown relation {relation!r}; expected one of {RELATIONS}")
    parts = _split(events)
    ro, ar = parts["replace_one"], parts["add_remove"]
    has_ro = bool(ro.gaussians or ro.rr or ro.skellams)
    has_ar = bool(ar.gaussians or ar.rr or ar.skellams)
    target = relation or ("replace_one" if has_ro else "add_remove")
    if not events:
        return Composition(0.0, target, "direct")
    if target == "add_remove":
        if has_ro:
            raise PrivacyError(
                "replace-one events cannot be converted to add/remove; "
                "account under replace_one instead"
            )
        return Composition(_eps_of_delta(ar, relation="add_remove", accountant=accountant)(delta),
                           target, "direct")
    if not has_ar:
        return Composition(_eps_of_delta(ro, relation="replace_one", accountant=accountant)(delta),
                           target, "direct")
    direct = _as_replace_one(ar)
    merged = _Part(ro.gaussians + direct.gaussians, ro.rr + direct.rr, ro.skellams + direct.skellams)
    try:
        eps: float | None = _eps_of_delta(merged, relation="replace_one", accountant=accountant)(delta)
    except AccountantUnsupportedError:
        eps = None
    if accountant == "pld" and eps is not None:
        return Composition(eps, target, "direct")  # the PLD pair is exact up to its grid
    group = _group_privacy(ro, ar, has_ro=has_ro, delta=delta, accountant=accountant)
    if eps is not None and eps <= group:
        return Composition(eps, target, "direct")
    return Composition(group, target, "group-privacy")


def _group_privacy(ro: _Part, ar: _Part, *, has_ro: bool, delta: float, accountant: str) -> float:
    """The fallback: the add/remove part by group privacy, plus the replace-one part
    by basic composition, delta split evenly."""
    ar_fn = _eps_of_delta(ar, relation="add_remove", accountant=accountant)
    if not has_ro:
        return _replace_one_from_add_remove(ar_fn, delta)
    ro_eps = _eps_of_delta(ro, relation="replace_one", accountant=accountant)(delta / 2.0)
    return ro_eps + _replace_one_from_add_remove(ar_fn, delta / 2.0)


def compose_epsilon(
    events: Sequence[Any], *, delta: float, accountant: str = "pld", relation: str | None = None
) -> float:
    """`compose(...).epsilon`."""
    return compose(events, delta=delta, accountant=accountant, relation=relation).epsilon


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
    """The smallest noise multiplier (to `rel_tol`) whose epsilon is <= target
    (securediff.privacy.noise_search; the safe end of the bracket). A pure function
    of its arguments, so a process asks the accountant once per calibration: a run
    calibrates every client, and resumed or repeated runs the same again."""
    if not (target_epsilon > 0.0 and math.isfinite(target_epsilon)):
        raise ConfigError(f"target_epsilon must be positive and finite, got {target_epsilon}")
    # As given (no coercion): a bad steps or sample rate is refused by dpsgd_epsilon's checks.
    return _calibrated(float(target_epsilon), sample_rate, steps, delta, check_accountant(accountant), rel_tol)


@lru_cache(maxsize=256)
def _calibrated(target_epsilon: float, sample_rate: float, steps: int, delta: float, accountant: str,
                rel_tol: float) -> float:
    """calibrate_noise_multiplier's search, once per process for each argument tuple."""
    from securediff.privacy.noise_search import smallest_safe_noise

    def eps(sigma: float) -> float:
        return dpsgd_epsilon(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps, delta=delta,
                             accountant=accountant)

    return smallest_safe_noise(eps, target=target_epsilon, rel_tol=rel_tol, start=1.0,
                               what=f"q={sample_rate}, steps={steps}, delta={delta}")
