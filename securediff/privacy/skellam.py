"""The Skellam mechanism for distributed DP through secure aggregation.

Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private
Federated Learning" (NeurIPS 2021). Each client adds only a share of integer
noise; secagg sums the shares, and the sum of independent Skellam variables is
Skellam, so the aggregate carries exactly the noise the accountant assumes.

Parametrization (the paper's, used everywhere here): Sk(mu) = X - Y with X, Y
independent Poisson(mu / 2), so mu is the VARIANCE of a coordinate and
Sk(mu1) + Sk(mu2) = Sk(mu1 + mu2).

Sensitivity in the integer domain, record level (neighbouring datasets differ
by one record of one client, add/remove). A client sums its sampled records'
clipped gradients (each L2 <= C) in float, scales the sum by gamma and rounds it
ONCE, stochastically: R_u(y) = floor(y + u), u uniform per coordinate. With the
same u for both neighbours, each coordinate of R_u(y') - R_u(y) is the floor or
the ceiling of (y' - y)_i, so it differs from (y' - y)_i by less than 1 and

    ||R_u(y') - R_u(y)||_2 <= gamma C + sqrt(d) =: Delta2.

The output distribution is the mixture over u of "R_u(y) + noise"; Renyi
divergence is jointly quasi-convex (van Erven & Harremoes 2014, Thm 13), so
the divergence of the mixtures is at most the maximum over u, i.e. the bound
for a shift of L2 norm <= Delta2. The shift is an integer vector, whose
coordinates satisfy |v_i| <= v_i^2, hence
Delta1 = min(sqrt(d) Delta2, Delta2^2). The other clients' rounded sums do not
depend on the record, and the reduction mod 2^b is post-processing.
The paper's tighter "conditional rounding" bound (re-round until the rounded
vector's norm is below a high-probability bound, as in the distributed discrete
Gaussian of Kairouz et al. 2021) bounds the norm of one client's rounded vector,
i.e. a user-level sensitivity; it says nothing about the difference of two
roundings of sums that differ by one record, so it is not used here. The
rounding term is kept at 1% of gamma C instead (`ROUNDING_FRACTION`).

Modular clipping: the noisy integers live in Z_(2^b). Wraps are not forbidden;
`plan_skellam` bounds the probability that any coordinate of the aggregate
leaves [-2^(b-1), 2^(b-1)) and records it. No random rotation: the paper
rotates to flatten coordinates so that few bits suffice; here b may go up to
47 and the bound below already uses the worst case (one coordinate carrying
the whole L2 norm of the batch), so a rotation would cost O(d log d) a step
for nothing.

secagg note: protocols' FixedPoint clips integer inputs to
[-(2^(v-1) - 1), 2^(v-1) - 1]; a centred share can be -2^(b-1), so secagg
must run with value_bits = b + 1 (`SkellamPlan.secagg_value_bits`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from securediff.errors import ConfigError, PrivacyError
from securediff.rng import RandomSource

__all__ = [
    "MAX_MODULUS_BITS",
    "ROUNDING_FRACTION",
    "ModulusTooSmallError",
    "NoiseFloorError",
    "SkellamPlan",
    "check_noise_floor",
    "choose_scale",
    "decode_sum",
    "encode_share",
    "integer_sensitivities",
    "plan_skellam",
    "realized_variance",
    "sample_poisson",
    "sample_skellam",
]

# secagg's integer path takes value_bits <= 48, and a centred share needs b + 1 of them.
MAX_MODULUS_BITS = 47
# Rule for gamma: the rounding term sqrt(d) of Delta2 is this fraction of gamma * C.
ROUNDING_FRACTION = 0.01
# Below this Poisson mean PTRS is not valid (Hoermann 1993); we count exponential arrivals.
_PTRS_MIN_MEAN = 10.0


class ModulusTooSmallError(ConfigError):
    """No modulus 2^b with b <= MAX_MODULUS_BITS keeps the wrap probability at its target."""


class NoiseFloorError(PrivacyError):
    """Fewer clients survived than the noise floor the plan was accounted for."""


# -- sampling -------------------------------------------------------------------------------
def _poisson_log_pmf(k: np.ndarray, lam: float) -> np.ndarray:
    """log P(Pois(lam) = k) for float k >= 0, stable for large lam (Loader 2000:
    -stirlerr(k) - bd0(k, lam) - log(2 pi k)/2, so no lam*log(lam) cancellation)."""
    k = np.asarray(k, dtype=np.float64)
    out = np.full(k.shape, -lam)  # k = 0
    pos = k > 0
    kp = k[pos]
    x = (kp - lam) / lam
    bd0 = lam * ((1.0 + x) * np.log1p(x) - x)  # k log(k/lam) + lam - k, error ~ eps |k - lam|
    small = kp < 16
    stirlerr = np.empty_like(kp)
    ks = kp[small]
    stirlerr[small] = gammaln(ks + 1.0) - (ks + 0.5) * np.log(ks) + ks - 0.5 * math.log(2 * math.pi)
    kl = kp[~small]
    inv2 = 1.0 / (kl * kl)  # Stirling series, next term 1/(1188 k^9) < 2e-14 at k = 16
    stirlerr[~small] = (1.0 / 12 - inv2 * (1.0 / 360 - inv2 * (1.0 / 1260 - inv2 / 1680))) / kl
    out[pos] = -stirlerr - bd0 - 0.5 * np.log(2 * math.pi * kp)
    return out


def _poisson_small(lam: float, n: int, source: RandomSource) -> np.ndarray:
    """Pois(lam) as the number of rate-1 exponential arrivals in [0, lam]: exact,
    about lam + 1 uniforms a draw (used for lam < 10 only)."""
    counts = np.zeros(n, dtype=np.int64)
    elapsed = np.zeros(n)
    active = np.arange(n)
    while active.size:
        elapsed[active] -= np.log(source.uniform(active.size))  # uniform in (0, 1]: finite
        arrived = elapsed[active] <= lam
        active = active[arrived]
        counts[active] += 1
    return counts


def _poisson_ptrs(lam: float, n: int, source: RandomSource) -> np.ndarray:
    """Pois(lam), lam >= 10, by Hoermann's transformed rejection with squeeze (PTRS,
    1993; the algorithm numpy uses), vectorised: every rejected slot retries."""
    b = 0.931 + 2.53 * math.sqrt(lam)
    a = -0.059 + 0.02483 * b
    log_invalpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2.0)
    out = np.empty(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        m = pending.size
        u = source.uniform(m)
        u -= 0.5  # (-0.5, 0.5]
        v = source.uniform(m)  # (0, 1]
        us = np.abs(u)
        np.subtract(0.5, us, out=us)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.divide(2.0 * a, us)  # us == 0 (probability 2^-53): k = inf, rejected below
            k += b
            k *= u
            k += lam + 0.43
            np.floor(k, out=k)
        accept = us >= 0.07
        accept &= v <= vr  # the squeeze: most candidates stop here
        # The rest face the exact test, except k < 0 and the region us < 0.013, v > us
        # (outside the hat's support); us == 0 falls there too since v > 0.
        check = (us >= 0.013) | (v <= us)
        check &= k >= 0.0
        check &= ~accept
        idx = np.flatnonzero(check)
        if idx.size:
            usi = us[idx]
            lhs = np.log(v[idx]) + log_invalpha - np.log(a / (usi * usi) + b)
            accept[idx] = lhs <= _poisson_log_pmf(k[idx], lam)
        out[pending[accept]] = k[accept].astype(np.int64)
        pending = pending[~accept]
    return out


def sample_poisson(lam: float, size: int, source: RandomSource) -> np.ndarray:
    """`size` independent Poisson(lam) draws, int64, every uniform from `source`."""
    lam = float(lam)
    if not (lam >= 0.0 and math.isfinite(lam)) or lam > 2.0**50:
        raise ConfigError(f"Poisson mean must be in [0, 2^50], got {lam}")
    if isinstance(size, bool) or int(size) != size or size < 0:
        raise ConfigError(f"size must be a non-negative integer, got {size!r}")
    size = int(size)
    if lam == 0.0 or size == 0:
        return np.zeros(size, dtype=np.int64)
    if lam < _PTRS_MIN_MEAN:
        return _poisson_small(lam, size, source)
    return _poisson_ptrs(lam, size, source)


def sample_skellam(mu: float, size: int, source: RandomSource) -> np.ndarray:
    """`size` draws of Sk(mu) = Pois(mu/2) - Pois(mu/2): integer noise of VARIANCE mu.

    The Poisson draws use only `source.uniform` (ChaCha20), never a seeded
    PRNG: the noise is what the privacy claim rests on."""
    mu = float(mu)
    if not (mu >= 0.0 and math.isfinite(mu)):
        raise ConfigError(f"Skellam variance must be >= 0 and finite, got {mu}")
    both = sample_poisson(mu / 2.0, 2 * int(size), source)
    return both[: int(size)] - both[int(size) :]


# -- the plan ------------------------------------------------------------------------------------
def choose_scale(*, dim: int, l2_clip: float, rounding_fraction: float = ROUNDING_FRACTION) -> float:
    """gamma such that the rounding term sqrt(d) is `rounding_fraction` of gamma * C."""
    return math.sqrt(dim) / (rounding_fraction * l2_clip)


def integer_sensitivities(*, dim: int, l2_clip: float, scale: float) -> tuple[float, float]:
    """(Delta1, Delta2) in integer units: Delta2 = gamma C + sqrt(d),
    Delta1 = min(sqrt(d) Delta2, Delta2^2) (module docstring)."""
    l2 = scale * l2_clip + math.sqrt(dim)
    return min(math.sqrt(dim) * l2, l2 * l2), l2


@dataclass(frozen=True)
class SkellamPlan:
    """The public parameters of the mechanism, the same for every client.

    `noise_variance` is the variance per coordinate of the aggregate's noise when
    `min_survivors` clients contribute (integer units); every client adds
    `share_variance` = noise_variance / min_survivors, so more survivors only add
    noise. `wrap_probability` bounds the probability that a step's aggregate
    leaves [-2^(b-1), 2^(b-1)) in some coordinate with up to `max_clients`
    contributing and `expected_batch` records expected in the step."""

    dim: int
    l2_clip: float
    scale: float
    modulus_bits: int
    noise_variance: float
    min_survivors: int
    max_clients: int
    expected_batch: float
    wrap_probability: float

    def __post_init__(self) -> None:
        for name in ("dim", "modulus_bits", "min_survivors", "max_clients"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not (float(self.noise_variance) >= 0.0 and math.isfinite(self.noise_variance)):
            raise ConfigError(f"noise_variance must be >= 0 and finite, got {self.noise_variance}")
        object.__setattr__(self, "noise_variance", float(self.noise_variance))
        for name in ("l2_clip", "scale", "expected_batch"):
            value = float(getattr(self, name))
            if not (value > 0.0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be positive and finite, got {value}")
            object.__setattr__(self, name, value)
        if not 2 <= self.modulus_bits <= MAX_MODULUS_BITS:
            raise ConfigError(f"modulus_bits must be in [2, {MAX_MODULUS_BITS}]")
        if self.min_survivors > self.max_clients:
            raise ConfigError("min_survivors cannot exceed max_clients")
        if not 0.0 <= self.wrap_probability <= 1.0:
            raise ConfigError(f"wrap_probability must be in [0, 1], got {self.wrap_probability}")

    @property
    def share_variance(self) -> float:
        """The variance one client adds per coordinate."""
        return self.noise_variance / self.min_survivors

    @property
    def l2_sensitivity(self) -> float:
        return integer_sensitivities(dim=self.dim, l2_clip=self.l2_clip, scale=self.scale)[1]

    @property
    def l1_sensitivity(self) -> float:
        return integer_sensitivities(dim=self.dim, l2_clip=self.l2_clip, scale=self.scale)[0]

    @property
    def noise_multiplier(self) -> float:
        """sqrt(noise_variance) / (gamma C): the DP-SGD sigma this compares with."""
        return math.sqrt(self.noise_variance) / (self.scale * self.l2_clip)

    @property
    def secagg_value_bits(self) -> int:
        """The FixedPoint value_bits that carries every centred share unclipped."""
        return self.modulus_bits + 1


def _log_skellam_tail(t: float, variance: float) -> float:
    """log of the Chernoff bound on P(Sk(variance) >= t), t > 0: the MGF is
    exp(variance (cosh s - 1)), minimised at s = asinh(t / variance)."""
    r = t / variance
    return variance * (math.sqrt(1.0 + r * r) - 1.0) - t * math.asinh(r)


def _batch_bound(expected_batch: float, tail: float) -> int:
    """The smallest k with P(B >= k + 1) <= tail for a sum B of independent
    Bernoullis with mean m (Chernoff: P(B >= k) <= exp(k - m - k log(k/m)), k > m)."""
    m = expected_batch
    log_tail = math.log(tail)
    k = max(1, math.ceil(m))
    while True:
        k1 = k + 1
        if k1 - m - k1 * math.log(k1 / m) <= log_tail:
            return k
        k = max(k + 1, int(k * 1.01))


def _wrap_probability(*, bits: int, signal: float, variance: float, dim: int, batch_tail: float) -> float:
    half = 2.0 ** (bits - 1)
    room = half - 1.0 - signal  # the aggregate is an integer: |a| <= half - 1 never wraps
    if room <= 0.0:
        return 1.0
    log_noise = math.log(2.0 * dim) + _log_skellam_tail(room, variance)
    return min(1.0, batch_tail + math.exp(log_noise))


def plan_skellam(
    *,
    dim: int,
    l2_clip: float,
    noise_multiplier: float,
    min_survivors: int,
    max_clients: int,
    expected_batch: float,
    bits: int | None = None,
    wrap_probability: float = 1e-9,
    rounding_fraction: float = ROUNDING_FRACTION,
) -> SkellamPlan:
    """The plan for noise `noise_multiplier` relative to the integer sensitivity:
    noise_variance = (noise_multiplier * Delta2)^2, so the privacy of the plan is
    that of its (Delta1, Delta2, noise_variance); gamma by `choose_scale`.

    Modulus: a step's aggregate coordinate is at most gamma C B + max_clients in
    size (B records in the step, each clipped to C, all on one coordinate in the
    worst case; each client's rounding adds < 1) plus Sk(max_clients *
    share_variance) noise. B <= B_max except with probability <= wrap/2
    (Chernoff for Poisson sampling, mean `expected_batch` over all clients);
    the noise leaves the remaining room in some coordinate with probability
    <= 2 d * Chernoff tail. `bits` None picks the smallest b with total <= the
    target; a given `bits` is checked. Raises ModulusTooSmallError if none fits."""
    if isinstance(dim, bool) or int(dim) != dim or dim < 1:
        raise ConfigError(f"dim must be a positive integer, got {dim!r}")
    for name, value in (("l2_clip", l2_clip), ("noise_multiplier", noise_multiplier),
                        ("expected_batch", expected_batch), ("rounding_fraction", rounding_fraction)):
        if not (float(value) > 0.0 and math.isfinite(float(value))):
            raise ConfigError(f"{name} must be positive and finite, got {value}")
    if not 0.0 < wrap_probability < 1.0:
        raise ConfigError(f"wrap_probability must be in (0, 1), got {wrap_probability}")
    for name, value in (("min_survivors", min_survivors), ("max_clients", max_clients)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if min_survivors > max_clients:
        raise ConfigError(f"min_survivors {min_survivors} exceeds max_clients {max_clients}")
    scale = choose_scale(dim=dim, l2_clip=l2_clip, rounding_fraction=rounding_fraction)
    _, l2 = integer_sensitivities(dim=dim, l2_clip=l2_clip, scale=scale)
    variance = (noise_multiplier * l2) ** 2
    batch_tail = wrap_probability / 2.0
    b_max = _batch_bound(expected_batch, batch_tail)
    signal = scale * l2_clip * b_max + max_clients
    worst_variance = variance * max_clients / min_survivors  # every client survives

    def wrap(b: int) -> float:
        return _wrap_probability(bits=b, signal=signal, variance=worst_variance, dim=dim,
                                 batch_tail=batch_tail)

    if bits is None:
        chosen = next((b for b in range(2, MAX_MODULUS_BITS + 1) if wrap(b) <= wrap_probability), None)
        if chosen is None:
            raise ModulusTooSmallError(
                f"no modulus up to 2^{MAX_MODULUS_BITS} keeps the wrap probability <= "
                f"{wrap_probability:g} (signal bound {signal:.3g}, noise variance "
                f"{worst_variance:.3g}); lower expected_batch, the noise or the clip")
    else:
        if isinstance(bits, bool) or int(bits) != bits or not 2 <= bits <= MAX_MODULUS_BITS:
            raise ConfigError(f"bits must be an integer in [2, {MAX_MODULUS_BITS}], got {bits!r}")
        chosen = int(bits)
        if wrap(chosen) > wrap_probability:
            raise ModulusTooSmallError(
                f"{chosen} bits wrap with probability up to {wrap(chosen):.3g} > {wrap_probability:g}")
    return SkellamPlan(dim=int(dim), l2_clip=float(l2_clip), scale=scale, modulus_bits=chosen,
                       noise_variance=variance, min_survivors=int(min_survivors),
                       max_clients=int(max_clients), expected_batch=float(expected_batch),
                       wrap_probability=wrap(chosen))


# -- encode / decode ---------------------------------------------------------------------------
def _centred(values: np.ndarray, bits: int) -> np.ndarray:
    """The representative in [-2^(b-1), 2^(b-1)) of each int64 mod 2^b."""
    half = np.int64(1 << (bits - 1))
    mask = np.int64((1 << bits) - 1)
    return ((values + half) & mask) - half  # two's complement: & is reduction mod 2^b


def encode_share(clipped_sum: np.ndarray, plan: SkellamPlan, source: RandomSource) -> np.ndarray:
    """One client's share: round(gamma * clipped_sum) stochastically, plus
    Sk(share_variance), reduced to the centred representative mod 2^b (int64)."""
    x = np.asarray(clipped_sum)
    if x.shape != (plan.dim,) or x.dtype.kind != "f":
        raise ConfigError(f"clipped_sum must be a float vector of length {plan.dim}, got "
                          f"{x.dtype} {x.shape}")
    y = x.astype(np.float64) * plan.scale
    if not np.isfinite(y).all() or (y.size and np.abs(y).max() >= 2.0**52):
        raise ConfigError("clipped_sum * scale must be finite and below 2^52 in magnitude")
    # floor(y + u) with u in [0, 1): the same u for both neighbours is the coupling
    # the sensitivity bound uses. 1 - uniform maps (0, 1] onto [0, 1).
    rounded = np.floor(y + (1.0 - source.uniform(plan.dim))).astype(np.int64)
    noise = sample_skellam(plan.share_variance, plan.dim, source)
    return _centred(rounded + noise, plan.modulus_bits)


def decode_sum(summed: np.ndarray, plan: SkellamPlan) -> np.ndarray:
    """The noisy sum of the clipped gradients: the integer sum of the shares
    reduced mod 2^b (centred), divided by gamma. A coordinate that wrapped comes
    back off by a multiple of 2^b / gamma (probability <= plan.wrap_probability)."""
    s = np.asarray(summed)
    if s.shape != (plan.dim,) or s.dtype.kind not in "iu":
        raise ConfigError(f"summed must be an integer vector of length {plan.dim}, got "
                          f"{s.dtype} {s.shape}")
    return _centred(s.astype(np.int64), plan.modulus_bits).astype(np.float64) / plan.scale


# -- dropouts ---------------------------------------------------------------------------------------
def _check_survivors(plan: SkellamPlan, survivors: int) -> int:
    if isinstance(survivors, bool) or int(survivors) != survivors or survivors < 0:
        raise ConfigError(f"survivors must be a non-negative integer, got {survivors!r}")
    if survivors > plan.max_clients:
        raise ConfigError(f"{survivors} survivors exceed the plan's {plan.max_clients} clients")
    return int(survivors)


def realized_variance(plan: SkellamPlan, survivors: int) -> float:
    """The noise variance that reached the aggregate: survivors * share_variance."""
    return _check_survivors(plan, survivors) * plan.share_variance


def check_noise_floor(plan: SkellamPlan, survivors: int) -> None:
    """Raise NoiseFloorError if fewer than `min_survivors` shares are in the sum."""
    if _check_survivors(plan, survivors) < plan.min_survivors:
        raise NoiseFloorError(
            f"only {survivors} of the {plan.min_survivors} noise shares the plan needs reached "
            f"the aggregate: its noise variance {realized_variance(plan, survivors):.4g} is below "
            f"the accounted {plan.noise_variance:.4g}; the sum must not be released")
