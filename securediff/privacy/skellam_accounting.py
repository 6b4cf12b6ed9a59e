"""Accounting for the Poisson-subsampled Skellam mechanism, two ways.

Parametrization as in `skellam`: Sk(mu) = Pois(mu/2) - Pois(mu/2), variance mu;
sensitivities (Delta1, Delta2) are L1/L2 bounds on the integer shift between
neighbouring outputs; neighbouring relation add/remove.

Primary (`skellam_epsilon`), a sound upper bound:
1. RDP of one release (Agarwal, Kairouz, Liu, NeurIPS 2021; Theorem 3.5 is
   the 1-D bound, as cited by two independent implementations): for integer
   shift D and alpha > 1,
       D_alpha(Sk(mu) + D || Sk(mu)) <= alpha D^2/(2 mu)
                                        + min(((2 alpha - 1) D^2 + 6|D|)/(4 mu^2), 3|D|/(2 mu)).
   For a product of d such coordinates the divergences add, and a sum of
   minima is at most the minimum of the sums, which gives the paper's
   multi-dimensional bound with D^2 -> Delta2^2, |D| -> Delta1. The bound is
   symmetric in the sign of D, so it holds for both directions of add/remove.
2. Poisson subsampling at rate q: Zhu & Wang (ICML 2019), Theorem 6, the
   general upper bound for integer alpha >= 2:
       (alpha-1) eps'(alpha) <= log[(1-q)^(alpha-1) (alpha q - q + 1)
            + C(alpha,2) q^2 (1-q)^(alpha-2) e^eps(2)
            + 3 sum_{l=3}^{alpha} C(alpha,l) q^l (1-q)^(alpha-l) e^((l-1) eps(l))],
   and eps'(alpha) <= eps(alpha) (subsampling never hurts: quasi-convexity).
3. Composition over steps adds RDP; conversion to (eps, delta) by
   Balle et al. 2020 / Canonne-Kamath-Steinke 2020:
       eps = min_alpha eps_RDP(alpha) + log(1 - 1/alpha) - (log delta + log alpha)/(alpha - 1).

Numeric (`numeric_skellam_epsilon`), the project's own independent check:
the exact Renyi divergences, both directions, between P = Sk(mu) and the
mixture (1-q) P + q P(. - D) for an integer shift D along ONE coordinate
(the other coordinates are identical on both sides and cancel), by direct
summation over the support in log space. The Skellam log-pmf is
log I_|k|(mu) - mu, from scipy's exponentially scaled Bessel function for
|k| < 50 and the uniform asymptotic (Debye) expansion of I_v with four
correction terms (DLMF 10.41.3) above, so the far tails never underflow. The
summation range is widened until the summand at both edges is e^-40 below its
peak. This is the exact RDP of the mechanism for that one neighbouring pair,
so it is a LOWER bound on the mechanism's RDP: numeric <= primary always (for
the primary at Delta1 = Delta2 = D), and the gap measures the slack of the two
bounds (the paper's discretisation term and Zhu-Wang's factor 3). Composed and
converted exactly like the primary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import gammaln, i0e, ive, logsumexp

from securediff.errors import ConfigError

__all__ = [
    "NUMERIC_ORDERS",
    "SKELLAM_ORDERS",
    "calibrate_skellam_noise",
    "numeric_skellam_epsilon",
    "numeric_subsampled_rdp",
    "rdp_to_epsilon",
    "skellam_epsilon",
    "skellam_log_pmf",
    "skellam_rdp",
    "subsampled_skellam_rdp",
]

SKELLAM_ORDERS: tuple[int, ...] = (*range(2, 65), 80, 96, 128, 256, 512, 1024)
NUMERIC_ORDERS: tuple[int, ...] = tuple(range(2, 65))
_DEBYE_MIN_ORDER = 50
_IVE_MAX_VARIANCE = 1e6


def _check_orders(orders: Sequence[int]) -> np.ndarray:
    arr = np.asarray(orders)
    if arr.ndim != 1 or arr.size == 0 or np.any(arr != np.round(arr)) or np.any(arr < 2):
        raise ConfigError("RDP orders must be a non-empty list of integers >= 2")
    return arr.astype(np.int64)


def _check_common(*, variance: float, sample_rate: float, steps: int) -> None:
    if not (variance > 0.0 and math.isfinite(variance)):
        raise ConfigError(f"variance must be positive and finite, got {variance}")
    if not 0.0 < sample_rate <= 1.0:
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ConfigError(f"steps must be a non-negative integer, got {steps!r}")


# -- primary: closed-form bound ------------------------------------------------------------------
def skellam_rdp(*, l1: float, l2: float, variance: float, orders: Sequence[int]) -> np.ndarray:
    """The paper's RDP bound of one unsubsampled release, per order."""
    a = np.asarray(orders, dtype=np.float64)
    mu = float(variance)
    extra = np.minimum(((2 * a - 1) * l2 * l2 + 6 * l1) / (4 * mu * mu), 3 * l1 / (2 * mu))
    return a * l2 * l2 / (2 * mu) + extra


def subsampled_skellam_rdp(
    *, l1: float, l2: float, variance: float, sample_rate: float, orders: Sequence[int] = SKELLAM_ORDERS
) -> np.ndarray:
    """RDP per step of the Poisson-subsampled mechanism (Zhu & Wang 2019, Thm 6)."""
    ords = _check_orders(orders)
    _check_common(variance=variance, sample_rate=sample_rate, steps=1)
    if l1 < 0 or l2 < 0 or not (math.isfinite(l1) and math.isfinite(l2)):
        raise ConfigError(f"sensitivities must be finite and >= 0, got l1={l1}, l2={l2}")
    base_all = skellam_rdp(l1=l1, l2=l2, variance=variance, orders=np.arange(int(ords.max()) + 1))
    q = float(sample_rate)
    if q == 1.0:
        return base_all[ords]
    log_q, log_1q = math.log(q), math.log1p(-q)
    out = np.empty(ords.size)
    for i, alpha in enumerate(ords):
        alpha = int(alpha)
        ls = np.arange(2, alpha + 1)
        log_binom = gammaln(alpha + 1.0) - gammaln(ls + 1.0) - gammaln(alpha - ls + 1.0)
        terms = log_binom + ls * log_q + (alpha - ls) * log_1q + (ls - 1) * base_all[ls]
        terms[1:] += math.log(3.0)  # l >= 3
        first = (alpha - 1) * log_1q + math.log(alpha * q - q + 1.0)
        bound = logsumexp(np.concatenate([[first], terms])) / (alpha - 1)
        out[i] = min(bound, base_all[alpha])
    return out


def rdp_to_epsilon(rdp: Sequence[float], orders: Sequence[int], delta: float) -> float:
    """(eps, delta) from composed RDP (Balle et al. 2020, Thm 21; the conversion
    Opacus uses), minimised over the orders; never below 0."""
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    a = np.asarray(orders, dtype=np.float64)
    r = np.asarray(rdp, dtype=np.float64)
    eps = r + np.log1p(-1.0 / a) - (math.log(delta) + np.log(a)) / (a - 1.0)
    return max(0.0, float(np.nanmin(eps)))


def skellam_epsilon(
    *,
    l1: float,
    l2: float,
    variance: float,
    sample_rate: float,
    steps: int,
    delta: float,
    orders: Sequence[int] = SKELLAM_ORDERS,
) -> float:
    """Epsilon at `delta` of `steps` Poisson-subsampled Skellam releases (add/remove)."""
    _check_common(variance=variance, sample_rate=sample_rate, steps=steps)
    per_step = subsampled_skellam_rdp(l1=l1, l2=l2, variance=variance, sample_rate=sample_rate,
                                      orders=orders)
    return rdp_to_epsilon(per_step * int(steps), orders, delta)


def calibrate_skellam_noise(
    build: Callable[[float], Any],
    *,
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    rel_tol: float = 1e-4,
    orders: Sequence[int] = SKELLAM_ORDERS,
    epsilon: Callable[[Any], float] | None = None,
) -> float:
    """The smallest noise multiplier z (to `rel_tol`) whose plan `build(z)` (anything
    with l1_sensitivity, l2_sensitivity and noise_variance, e.g. a SkellamPlan) has
    epsilon <= target (securediff.privacy.noise_search; the safe end of the bracket).
    `epsilon(plan)`, if given, replaces the steps' own epsilon (e.g. the steps
    composed with other releases); it must fall as the noise grows."""
    if not (target_epsilon > 0.0 and math.isfinite(target_epsilon)):
        raise ConfigError(f"target_epsilon must be positive and finite, got {target_epsilon}")

    def eps(z: float) -> float:
        plan = build(z)
        if epsilon is not None:
            return epsilon(plan)
        return skellam_epsilon(l1=plan.l1_sensitivity, l2=plan.l2_sensitivity,
                               variance=plan.noise_variance, sample_rate=sample_rate, steps=steps,
                               delta=delta, orders=orders)

    from securediff.privacy.noise_search import smallest_safe_noise

    return smallest_safe_noise(eps, target=target_epsilon, rel_tol=rel_tol, start=0.5,
                               what=f"q={sample_rate}, steps={steps}, delta={delta}")


# -- numeric: exact summation over the pmf ----------------------------------------------------------
def _debye_log_pmf(v: np.ndarray, mu: float) -> np.ndarray:
    """log I_v(mu) - mu for v >= 1 by DLMF 10.41.3 (z = mu / v, p = v / s),
    written without the cancellations of s - mu and log(mu / (v + s))."""
    s = np.hypot(v, mu)
    s_minus_mu = v * v / (s + mu)
    log_ratio = -np.log1p((v + s_minus_mu) / mu)  # log(mu / (v + s))
    p = v / s
    p2 = p * p
    u1 = p * (3 - 5 * p2) / 24
    u2 = p2 * (81 - 462 * p2 + 385 * p2 * p2) / 1152
    u3 = p * p2 * (30375 - 369603 * p2 + 765765 * p2**2 - 425425 * p2**3) / 414720
    u4 = p2 * p2 * (4465125 - 94121676 * p2 + 349922430 * p2**2 - 446185740 * p2**3
                    + 185910725 * p2**4) / 39813120
    series = 1 + u1 / v + u2 / v**2 + u3 / v**3 + u4 / v**4
    return s_minus_mu + v * log_ratio - 0.5 * np.log(2 * math.pi * s) + np.log(series)


def skellam_log_pmf(k: np.ndarray, variance: float) -> np.ndarray:
    """log P(Sk(variance) = k) = log I_|k|(variance) - variance, for integer k."""
    v = np.abs(np.asarray(k, dtype=np.float64))
    mu = float(variance)
    out = np.empty(v.shape)
    zero = v == 0
    out[zero] = np.log(i0e(mu))
    # scipy's ive returns NaN beyond mu ~ 4e9; there the expansion's error, of
    # order s^-5 with s = hypot(v, mu), is far below float64 resolution anyway.
    exact = ~zero & (v < _DEBYE_MIN_ORDER) & (mu <= _IVE_MAX_VARIANCE)
    with np.errstate(divide="ignore"):
        out[exact] = np.log(ive(v[exact], mu))
    rest = ~zero & ~exact
    out[rest] = _debye_log_pmf(v[rest], mu)
    return out


def _renyi_pair(log_p: np.ndarray, log_m: np.ndarray, alpha: int) -> tuple[float, float, float]:
    """(D_alpha(M||P), D_alpha(P||M), how far below its peak the summands end)."""
    fwd = (1 - alpha) * log_p + alpha * log_m
    bwd = alpha * log_p + (1 - alpha) * log_m
    margin = min(fwd.max() - max(fwd[0], fwd[-1]), bwd.max() - max(bwd[0], bwd[-1]))
    return logsumexp(fwd) / (alpha - 1), logsumexp(bwd) / (alpha - 1), margin


def numeric_subsampled_rdp(
    *, shift: int, variance: float, sample_rate: float, orders: Sequence[int] = NUMERIC_ORDERS
) -> np.ndarray:
    """Exact RDP per order of the pair (mixture, P), max of both directions, for
    P = Sk(variance), mixture = (1-q) P + q P(. - shift); see the module docstring."""
    ords = _check_orders(orders)
    _check_common(variance=variance, sample_rate=sample_rate, steps=1)
    if isinstance(shift, bool) or int(shift) != shift or shift < 1:
        raise ConfigError(f"shift must be a positive integer, got {shift!r}")
    shift, q, sd = int(shift), float(sample_rate), math.sqrt(variance)
    top = int(ords.max())
    pad = int(14 * sd) + 50
    while True:  # one grid for every order: [-pad, top * shift + pad], P and its shift
        lo = -pad
        log_all = skellam_log_pmf(np.arange(lo - shift, top * shift + pad + 1), variance)
        log_p, log_shifted = log_all[shift:], log_all[:-shift]
        log_m = log_shifted if q == 1.0 else np.logaddexp(
            math.log1p(-q) + log_p, math.log(q) + log_shifted)
        out = np.empty(ords.size)
        decayed = True
        for i, alpha in enumerate(ords):
            end = alpha * shift + pad - lo + 1  # the summands up to alpha * shift + pad
            fwd, bwd, margin = _renyi_pair(log_p[:end], log_m[:end], int(alpha))
            if not (math.isfinite(fwd) and math.isfinite(bwd)):
                raise ConfigError(f"non-finite Renyi divergence at order {alpha}")
            if margin < 40.0:
                decayed = False
                break
            out[i] = max(fwd, bwd)
        if decayed:
            break
        pad *= 2
        if pad > 1000 * sd + 10_000:
            raise ConfigError("the summands do not decay within 1000 standard deviations")
    return out


def numeric_skellam_epsilon(
    *,
    shift: int,
    variance: float,
    sample_rate: float,
    steps: int,
    delta: float,
    orders: Sequence[int] = NUMERIC_ORDERS,
) -> float:
    """Epsilon of `steps` compositions of the numeric RDP, converted like the primary."""
    _check_common(variance=variance, sample_rate=sample_rate, steps=steps)
    rdp = numeric_subsampled_rdp(shift=shift, variance=variance, sample_rate=sample_rate,
                                 orders=orders)
    return rdp_to_epsilon(rdp * int(steps), orders, delta)
