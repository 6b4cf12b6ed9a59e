"""A DP release of clipped-feature statistics: per-class sums and a pooled
second moment, every member record used once (no subsampling).

Each record x with its (public) label y is mapped by a declared feature map
that depends on nothing but x and public data (`identity`,
`colour_normalised_grey`, `Projection`), clipped to L2 norm C, and scaled to
the unit ball: u = clip(phi(x), C) / C. A client's contribution is the vector

    v = [w_s S_0, ..., w_s S_{K-1}] ++ w_m svec(P M P^T) [++ w_m rho]

with S_k the sum of u over its records of class k, M the sum of u u^T over all
its records, P a public moment projection with orthonormal rows (the identity
when the moment is full), rho the sum of ||u||^2 - ||P u||^2 (the energy the
projection leaves out; released only with a projection) and svec the
isometric packing of a symmetric matrix: diagonal entries once, each
off-diagonal entry of the upper triangle once, times sqrt(2), so that
||svec(A)||_2 = ||A||_F. Per-class counts are public (labels public) and are
not part of v. Sums over clients are sums of contributions, so the same
vector goes through any aggregation protocol.

Sensitivities of v (docs/stats_release.md derives them), with a = w_s^2 and
b = w_m^2 (units of v; multiply the noise by C for feature units):

    add/remove:   Delta2 = sqrt(a + b)
    replace-one:  Delta2 = sqrt(2a + 2b + a^2 / (2b))  if a <= 2b,  else 2 sqrt(a)
    add/remove:   Delta1 = w_s sqrt(d) + w_m (1 + (r - 1) / sqrt(2))
    replace-one:  Delta1 = 2 * the add/remove Delta1 (triangle inequality)

with d the feature dimension and r the moment's (r = d when full). Both L2
bounds are attained; the add/remove L1 bound too.

Noise: central Gaussian (plain and tee protocols: `GaussianStatsPlan`) or the
project's Skellam shares through secagg (`SkellamStatsPlan`), each with its
ledger event (`GaussianReleaseEvent`, `SkellamReleaseEvent`), accounted under
both relations by `accountants.compose`. Decoding: `securediff.privacy.stats_decode`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from securediff.errors import ConfigError
from securediff.privacy.accountants import RELATIONS, calibrate_noise_multiplier, compose
from securediff.privacy.ledger import GaussianReleaseEvent, SkellamReleaseEvent
from securediff.privacy.skellam import SkellamPlan, plan_skellam
from securediff.privacy.skellam_accounting import calibrate_skellam_noise
from securediff.rng import RandomSource

__all__ = [
    "GaussianStatsPlan",
    "Projection",
    "SkellamStatsPlan",
    "StatsLayout",
    "clip_features",
    "colour_normalised_grey",
    "contribution",
    "identity",
    "plan_gaussian_stats",
    "plan_skellam_stats",
    "svec",
    "svec_inverse",
]

GREY_EPS = 1e-3  # guards the per-channel division of an all-black channel
_ORTHONORMAL_TOL = 1e-6


# -- feature maps: per record, data-independent ---------------------------------------------------
def identity(images: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, D): each record flattened."""
    x = np.asarray(images, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


def colour_normalised_grey(images: np.ndarray) -> np.ndarray:
    """(N, c, H, W) in [-1, 1] -> (N, H*W): per image, intensities i = (x + 1) / 2,
    each channel divided by its own spatial mean (plus GREY_EPS), the channels
    averaged per pixel, and the result centred by subtracting its own spatial mean.

    A per-channel multiplicative tint (securediff.data.tint: i -> tint_c i) cancels
    in the division, up to GREY_EPS, so a client's colour does not reach the
    features. Each output depends on its own image only."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4:
        raise ConfigError(f"colour_normalised_grey takes (N, c, H, W) images, got shape {x.shape}")
    i = (x + 1.0) / 2.0
    i = i / (i.mean(axis=(2, 3), keepdims=True) + GREY_EPS)
    grey = i.mean(axis=1)
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    return grey.reshape(x.shape[0], -1)


@dataclass(frozen=True, eq=False)
class Projection:
    """f = matrix @ (base(x) - offset): a linear map fitted on public data only
    (e.g. a PCA basis of public images). Clipping follows, so any matrix will do."""

    matrix: np.ndarray  # (k, D)
    offset: np.ndarray | None = None  # (D,), a public mean
    base: Callable[[np.ndarray], np.ndarray] = identity

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.ndim != 2 or not np.isfinite(m).all():
            raise ConfigError(f"projection matrix must be a finite 2-D array, got shape {m.shape}")
        object.__setattr__(self, "matrix", m)
        if self.offset is not None:
            off = np.asarray(self.offset, dtype=np.float64)
            if off.shape != (m.shape[1],):
                raise ConfigError(f"offset must have shape ({m.shape[1]},), got {off.shape}")
            object.__setattr__(self, "offset", off)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        z = self.base(images)
        if z.shape[1] != self.matrix.shape[1]:
            raise ConfigError(f"projection takes {self.matrix.shape[1]} inputs, got {z.shape[1]}")
        if self.offset is not None:
            z = z - self.offset
        return z @ self.matrix.T


# -- packing -----------------------------------------------------------------------------------
def svec(a: np.ndarray) -> np.ndarray:
    """Upper triangle of symmetric `a` (row-major, diagonal included), off-diagonal
    entries times sqrt(2): ||svec(a)||_2 = ||a||_F. Length r (r + 1) / 2."""
    r = a.shape[0]
    iu = np.triu_indices(r)
    scale = np.where(iu[0] == iu[1], 1.0, math.sqrt(2.0))
    return a[iu] * scale


def svec_inverse(v: np.ndarray, r: int) -> np.ndarray:
    """The symmetric matrix whose svec is `v`."""
    iu = np.triu_indices(r)
    if v.shape != (iu[0].size,):
        raise ConfigError(f"svec of a {r}x{r} matrix has {iu[0].size} entries, got {v.shape}")
    upper = np.zeros((r, r))
    upper[iu] = v / np.where(iu[0] == iu[1], 1.0, math.sqrt(2.0))
    return upper + np.triu(upper, 1).T


# -- the layout of the released vector ------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class StatsLayout:
    """What is released: K per-class sums of d-dim features clipped to `clip_norm`,
    and the pooled second moment, full or of P u for a public `moment_projection`
    P (r x d, orthonormal rows: P P^T = I), whose svec is r (r + 1) / 2 entries
    plus one for the energy outside P. Weights scale the blocks (module docstring)."""

    num_classes: int
    dim: int
    clip_norm: float
    moment_projection: np.ndarray | None = None
    sum_weight: float = 1.0
    moment_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("num_classes", "dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("clip_norm", "sum_weight", "moment_weight"):
            value = float(getattr(self, name))
            if not (value > 0.0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be positive and finite, got {value}")
            object.__setattr__(self, name, value)
        if self.moment_projection is not None:
            p = np.asarray(self.moment_projection, dtype=np.float64)
            if p.ndim != 2 or p.shape[1] != self.dim or not 1 <= p.shape[0] <= self.dim:
                raise ConfigError(f"moment_projection must be (r, {self.dim}) with r <= {self.dim}, "
                                  f"got {p.shape}")
            if not np.allclose(p @ p.T, np.eye(p.shape[0]), atol=_ORTHONORMAL_TOL):
                raise ConfigError("moment_projection must have orthonormal rows (P P^T = I); "
                                  "orthonormalise a public basis, e.g. by QR")
            object.__setattr__(self, "moment_projection", p)

    @property
    def moment_dim(self) -> int:
        """r: the dimension of the released second moment."""
        p = self.moment_projection
        return self.dim if p is None else p.shape[0]

    @property
    def sums_size(self) -> int:
        return self.num_classes * self.dim

    @property
    def moment_size(self) -> int:
        r = self.moment_dim
        return r * (r + 1) // 2 + (0 if self.moment_projection is None else 1)

    @property
    def size(self) -> int:
        """Length of the released vector."""
        return self.sums_size + self.moment_size

    # Sensitivities in units of the released vector (docs/stats_release.md).
    @property
    def l2_add_remove(self) -> float:
        return math.sqrt(self.sum_weight**2 + self.moment_weight**2)

    @property
    def l2_replace_one(self) -> float:
        a, b = self.sum_weight**2, self.moment_weight**2
        if a <= 2.0 * b:
            return math.sqrt(2.0 * a + 2.0 * b + a * a / (2.0 * b))
        return 2.0 * math.sqrt(a)

    @property
    def l1_add_remove(self) -> float:
        r = self.moment_dim
        return self.sum_weight * math.sqrt(self.dim) + self.moment_weight * (1.0 + (r - 1) / math.sqrt(2.0))

    @property
    def l1_replace_one(self) -> float:
        return 2.0 * self.l1_add_remove

    def l2_sensitivity(self, relation: str) -> float:
        _relation(relation)
        return self.l2_replace_one if relation == "replace_one" else self.l2_add_remove


def _relation(relation: str) -> None:
    if relation not in RELATIONS:
        raise ConfigError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


def clip_features(features: np.ndarray, clip_norm: float) -> np.ndarray:
    """Each row scaled down to L2 norm <= clip_norm (rows already within are kept)."""
    f = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    return f * np.minimum(1.0, clip_norm / np.maximum(norms, 1e-300))


def contribution(features: np.ndarray, labels: np.ndarray, layout: StatsLayout) -> np.ndarray:
    """One client's (unnoised) contribution: the released vector over its records.
    `features` (n, d) are the feature map's outputs, clipped here; `labels` (n,) in
    [0, K)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or f.shape[1] != layout.dim:
        raise ConfigError(f"features must be (n, {layout.dim}), got {f.shape}")
    if y.shape != (f.shape[0],) or y.dtype.kind not in "iu":
        raise ConfigError(f"labels must be {f.shape[0]} integers, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= layout.num_classes):
        raise ConfigError(f"labels must lie in [0, {layout.num_classes})")
    if not np.isfinite(f).all():
        raise ConfigError("features must be finite")
    u = clip_features(f, layout.clip_norm) / layout.clip_norm
    sums = np.zeros((layout.num_classes, layout.dim))
    np.add.at(sums, y, u)
    p = layout.moment_projection
    g = u if p is None else u @ p.T
    moment = svec(g.T @ g)
    if p is not None:
        moment = np.append(moment, float(np.sum(u * u) - np.sum(g * g)))
    return np.concatenate([layout.sum_weight * sums.ravel(), layout.moment_weight * moment])


# -- central Gaussian noise (plain, tee) -------------------------------------------------------
@dataclass(frozen=True, eq=False)
class GaussianStatsPlan:
    """Central Gaussian noise N(0, noise_std^2) per coordinate of the released vector,
    calibrated under `relation` (its events' claims are stated under it)."""

    layout: StatsLayout
    noise_std: float
    relation: str = "add_remove"

    def event(self, *, artefact: str = "shared") -> GaussianReleaseEvent:
        return GaussianReleaseEvent(noise_std=self.noise_std,
                                    l2_sensitivity=self.layout.l2_add_remove,
                                    l2_replace_one=self.layout.l2_replace_one, artefact=artefact,
                                    relation=self.relation)

    def noised(self, total: np.ndarray, source: RandomSource) -> np.ndarray:
        """The release: the summed contributions plus the noise, drawn from `source`
        (a cryptographic stream, never a seeded PRNG)."""
        t = np.asarray(total, dtype=np.float64)
        if t.shape != (self.layout.size,):
            raise ConfigError(f"total must have length {self.layout.size}, got {t.shape}")
        return t + self.noise_std * source.normal_np(t.shape[0])


def plan_gaussian_stats(layout: StatsLayout, *, target_epsilon: float, delta: float,
                        relation: str, accountant: str = "exact") -> GaussianStatsPlan:
    """The noise that makes the release meet `target_epsilon` at `delta` under
    `relation`: the project's multiplier calibration for one unsubsampled Gaussian
    step, scaled by that relation's L2 sensitivity."""
    _relation(relation)
    z = calibrate_noise_multiplier(target_epsilon=target_epsilon, sample_rate=1.0, steps=1,
                                   delta=delta, accountant=accountant)
    return GaussianStatsPlan(layout=layout, noise_std=z * layout.l2_sensitivity(relation), relation=relation)


# -- distributed Skellam shares (secagg) ---------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SkellamStatsPlan:
    """Skellam shares for one release: `skellam` is the plan every client encodes its
    contribution with (skellam.encode_share; its l2_clip is the add/remove L2
    sensitivity of the vector). Integer sensitivities, with the same rounding
    uniforms on both sides: Delta2 = gamma * Delta2_real + sqrt(D) and
    Delta1 = min(gamma * Delta1_real + D, sqrt(D) Delta2, Delta2^2), D = layout.size.
    Calibrated under `relation` (its events' claims are stated under it)."""

    layout: StatsLayout
    skellam: SkellamPlan
    relation: str = "add_remove"

    def _integer(self, l1_real: float, l2_real: float) -> tuple[float, float]:
        gamma, dim = self.skellam.scale, self.layout.size
        l2 = gamma * l2_real + math.sqrt(dim)
        return min(gamma * l1_real + dim, math.sqrt(dim) * l2, l2 * l2), l2

    @property
    def sensitivities_add_remove(self) -> tuple[float, float]:
        return self._integer(self.layout.l1_add_remove, self.layout.l2_add_remove)

    @property
    def sensitivities_replace_one(self) -> tuple[float, float]:
        return self._integer(self.layout.l1_replace_one, self.layout.l2_replace_one)

    def event(self, *, survivors: int, artefact: str = "shared") -> SkellamReleaseEvent:
        """The event of the release whose sum held `survivors` noise shares."""
        (l1, l2), (l1_ro, l2_ro) = self.sensitivities_add_remove, self.sensitivities_replace_one
        return SkellamReleaseEvent(
            l1_sensitivity=l1, l2_sensitivity=l2, l1_replace_one=l1_ro, l2_replace_one=l2_ro,
            noise_variance=survivors * self.skellam.share_variance, artefact=artefact,
            scale=self.skellam.scale, min_survivors=self.skellam.min_survivors, relation=self.relation)


def plan_skellam_stats(layout: StatsLayout, *, target_epsilon: float, delta: float, relation: str,
                       min_survivors: int, max_clients: int, total_records: int) -> SkellamStatsPlan:
    """Skellam shares for one release at the noise floor (`min_survivors` shares),
    calibrated so that its event meets `target_epsilon` under `relation` by the rdp
    accountant; the modulus is planned for `total_records` records (every record
    once: sample rate 1, one step)."""
    _relation(relation)
    if isinstance(total_records, bool) or int(total_records) != total_records or total_records < 1:
        raise ConfigError(f"total_records must be a positive integer, got {total_records!r}")

    def build(z: float) -> SkellamStatsPlan:
        sk = plan_skellam(dim=layout.size, l2_clip=layout.l2_add_remove, noise_multiplier=z,
                          min_survivors=min_survivors, max_clients=max_clients,
                          expected_batch=float(total_records))
        return SkellamStatsPlan(layout=layout, skellam=sk, relation=relation)

    def epsilon(plan: SkellamStatsPlan) -> float:
        event = plan.event(survivors=plan.skellam.min_survivors)
        return compose([event], delta=delta, accountant="rdp", relation=relation).epsilon

    z = calibrate_skellam_noise(build, target_epsilon=target_epsilon, sample_rate=1.0, steps=1,
                                delta=delta, epsilon=epsilon)
    return build(z)
