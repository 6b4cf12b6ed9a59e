"""Direct replace-one RDP of Poisson-subsampled mechanisms (Gaussian, Skellam).

Why: DP-SGD and distributed Skellam steps are analysed under add/remove, and
the old route to a replace-one claim was group privacy (a replacement is a
removal then an addition: 2 eps at (1 + e^eps) delta), which is loose. Here
the replace-one pair itself is bounded. Derivation: docs/distributed_dp.md,
"Replace-one accounting".

The pair. Poisson sampling at rate q; record x of dataset D is replaced by x'
in D'. Conditional on the rest of the batch (and, for Skellam, on the rounding
uniforms, both coupled across D and D'), x is in the batch with probability q
on both sides, so the outputs are

    P = (1 - q) p0 + q p1,    Q = (1 - q) p0 + q p2,

p0 the output without x, p1 with x, p2 with x'. p0 vs p1 and p0 vs p2 are
add/remove pairs (RDP <= e_ar(j)); p1 vs p2 is an unsubsampled replace pair
(RDP <= e_ro(j)). The mixture over the conditioning is covered by joint
quasi-convexity of the Renyi divergence, as for add/remove.

Bound, integer alpha >= 2 (P/Q = 1 + q (p1 - p2)/Q, binomial expansion; the
j = 1 term vanishes because p1 and p2 both integrate to 1):

    E_Q[(P/Q)^alpha] <= 1 + sum_{j=2}^{alpha} C(alpha, j) q^j m_j,
    m_j = 2 (1 - q) e^{(j-1) e_ar(j)} + q (e^{(j-1) e_ro(j)} + 1)
    m_2 = min(m_2 above, 4 (1 - q) (e^{e_ar(2)} - 1) + q (e^{e_ro(2)} - 1)),

from |p1 - p2|^j <= p1^j + p2^j, Q^{1-j} <= (1-q) p0^{1-j} + q p2^{1-j}
(convexity of t^{1-j}) and, for j = 2, (p1 - p2)^2 <= 2 (p1 - p0)^2 + 2 (p2 - p0)^2.
The bound is symmetric in p1, p2, so it holds for both directions, and it is
capped by e_ro(alpha) (subsampling never hurts). It has the form of Wang,
Balle & Kasiviswanathan's general bound for sampling without replacement under
replace-one (AISTATS 2019, Thm 9), whose mixtures have the same shape, without
its e^eps(inf) terms (infinite for Gaussian and Skellam noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import gammaln, logsumexp

from securediff.errors import ConfigError
from securediff.privacy.skellam_accounting import (
    _check_orders,
    _renyi_pair,
    skellam_log_pmf,
    skellam_rdp,
)

__all__ = [
    "gaussian_replace_one_rdp",
    "numeric_gaussian_replace_one_rdp",
    "numeric_skellam_replace_one_rdp",
    "skellam_replace_one_rdp",
    "subsampled_replace_one_rdp",
]


def _log_expm1(x: np.ndarray) -> np.ndarray:
    """log(e^x - 1) for x >= 0, without overflow (-inf at 0)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return x + np.log(-np.expm1(-x))


def subsampled_replace_one_rdp(
    *, sample_rate: float, add_remove: np.ndarray, replace: np.ndarray, orders: Sequence[int]
) -> np.ndarray:
    """The module docstring's bound per order. `add_remove` and `replace` are the
    unsubsampled mechanism's RDP bounds e_ar(j), e_ro(j) at j = 0 .. max(orders)."""
    ords = _check_orders(orders)
    q = float(sample_rate)
    if not 0.0 < q <= 1.0:
        raise ConfigError(f"sample_rate must be in (0, 1], got {q}")
    e_ar, e_ro = np.asarray(add_remove, dtype=np.float64), np.asarray(replace, dtype=np.float64)
    top = int(ords.max())
    if e_ar.size <= top or e_ro.size <= top:
        raise ConfigError("RDP arrays must cover every order up to the largest")
    with np.errstate(divide="ignore"):
        log_q, log_1q = math.log(q), np.log1p(-q)
    js = np.arange(2, top + 1)
    log_m = np.logaddexp(math.log(2.0) + log_1q + (js - 1) * e_ar[js],
                         log_q + np.logaddexp((js - 1) * e_ro[js], 0.0))
    chi2 = np.logaddexp(math.log(4.0) + log_1q + _log_expm1(e_ar[2]), log_q + _log_expm1(e_ro[2]))
    log_m[0] = min(log_m[0], float(chi2))
    out = np.empty(ords.size)
    for i, alpha in enumerate(ords):
        alpha = int(alpha)
        j = js[: alpha - 1]
        log_binom = gammaln(alpha + 1.0) - gammaln(j + 1.0) - gammaln(alpha - j + 1.0)
        log_a = np.logaddexp(0.0, logsumexp(log_binom + j * log_q + log_m[: alpha - 1]))
        out[i] = min(log_a / (alpha - 1), e_ro[alpha])
    return out


def gaussian_replace_one_rdp(*, noise_multiplier: float, sample_rate: float,
                             orders: Sequence[int]) -> np.ndarray:
    """Per step: each record contributes a vector of norm <= C, noise std z C.
    Add/remove pairs are shifted by <= C (e_ar = j / (2 z^2)), a replacement by
    <= 2C (e_ro = 4 e_ar)."""
    z = float(noise_multiplier)
    if not (z > 0.0 and math.isfinite(z)):
        raise ConfigError(f"noise_multiplier must be positive and finite, got {z}")
    a = np.arange(int(_check_orders(orders).max()) + 1, dtype=np.float64)
    e_ar = a / (2.0 * z * z)
    return subsampled_replace_one_rdp(sample_rate=sample_rate, add_remove=e_ar, replace=4.0 * e_ar,
                                      orders=orders)


def skellam_replace_one_rdp(*, l1: float, l2: float, variance: float, sample_rate: float,
                            orders: Sequence[int]) -> np.ndarray:
    """Per step, from the add/remove sensitivities (l1, l2) of the integer sum: a
    replacement moves it by the difference of two add/remove shifts, so by the
    triangle inequality by at most (2 l1, 2 l2) (docs/distributed_dp.md)."""
    if l1 < 0 or l2 < 0 or not (math.isfinite(l1) and math.isfinite(l2)):
        raise ConfigError(f"sensitivities must be finite and >= 0, got l1={l1}, l2={l2}")
    if not (variance > 0.0 and math.isfinite(variance)):
        raise ConfigError(f"variance must be positive and finite, got {variance}")
    a = np.arange(int(_check_orders(orders).max()) + 1)
    e_ar = skellam_rdp(l1=l1, l2=l2, variance=variance, orders=a)
    e_ro = skellam_rdp(l1=2.0 * l1, l2=2.0 * l2, variance=variance, orders=a)
    return subsampled_replace_one_rdp(sample_rate=sample_rate, add_remove=e_ar, replace=e_ro,
                                      orders=orders)


# -- exact divergences of one replace pair: lower bounds, for the tests ------------------------
def _pair_rdp(log_p0: np.ndarray, log_p1: np.ndarray, log_p2: np.ndarray, q: float,
              ords: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, float]:
    """max of D_alpha(P||Q), D_alpha(Q||P) per order on one grid, and the smallest
    margin (how far below its peak a summand ends) over the orders."""
    # Quadrature weights enter each summand once: (1 - alpha) log w + alpha log w = log w.
    log_w = 0.0 if weights is None else np.log(weights)
    if q == 1.0:
        log_p, log_q_ = log_p1, log_p2
    else:
        log_p = np.logaddexp(math.log1p(-q) + log_p0, math.log(q) + log_p1)
        log_q_ = np.logaddexp(math.log1p(-q) + log_p0, math.log(q) + log_p2)
    out, margin = np.empty(ords.size), math.inf
    for i, alpha in enumerate(ords):
        fwd, bwd, m = _renyi_pair(log_p + log_w, log_q_ + log_w, int(alpha))
        out[i], margin = max(fwd, bwd), min(margin, m)
    return out, margin


def numeric_skellam_replace_one_rdp(*, shift: int, variance: float, sample_rate: float,
                                    orders: Sequence[int]) -> np.ndarray:
    """Exact RDP, both directions, of the one-dimensional replace pair p1 = Sk + shift,
    p2 = Sk - shift (p0 = Sk), by summation over the integers in log space, the
    range widened until every summand has decayed e^-40 below its peak."""
    ords = _check_orders(orders)
    if isinstance(shift, bool) or int(shift) != shift or shift < 1:
        raise ConfigError(f"shift must be a positive integer, got {shift!r}")
    shift, q = int(shift), float(sample_rate)
    pad = int(14 * math.sqrt(variance)) + 50
    while True:
        reach = int(ords.max()) * 2 * shift + pad
        k = np.arange(-reach, reach + 1)
        rdp, margin = _pair_rdp(skellam_log_pmf(k, variance), skellam_log_pmf(k - shift, variance),
                                skellam_log_pmf(k + shift, variance), q, ords, None)
        if margin >= 40.0:
            return rdp
        pad *= 2
        if pad > 1000 * math.sqrt(variance) + 10_000:
            raise ConfigError("the summands do not decay within 1000 standard deviations")


def numeric_gaussian_replace_one_rdp(*, noise_multiplier: float, sample_rate: float,
                                     orders: Sequence[int], points: int = 400_001) -> np.ndarray:
    """The same for N(0, z^2) and shifts +-1, by the trapezoid rule on a grid wide
    enough for the largest order (an independent check of the Gaussian bound)."""
    ords = _check_orders(orders)
    z, top = float(noise_multiplier), int(ords.max())
    reach = 2.0 * top + 40.0 * z
    x = np.linspace(-reach, reach, points)
    h = x[1] - x[0]
    c = -0.5 * math.log(2 * math.pi * z * z)
    weights = np.full(points, h)
    weights[[0, -1]] = h / 2
    rdp, _ = _pair_rdp(c - x**2 / (2 * z * z), c - (x - 1) ** 2 / (2 * z * z),
                       c - (x + 1) ** 2 / (2 * z * z), float(sample_rate), ords, weights)
    return rdp
