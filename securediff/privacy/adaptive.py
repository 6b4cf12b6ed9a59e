"""Adaptive clipping: clip norms that track a quantile of the data privately.

Three uses, one rule (Andrew, Thakkar, McMahan, Ramaswamy, "Differentially
Private Learning with Adaptive Clipping", NeurIPS 2021): after each release
of the fraction b of values that were not clipped, the norm moves
geometrically toward the target quantile gamma,

    C <- C * exp(-lr * (b - gamma)),

so C grows while fewer than gamma of the values fit under it and shrinks
otherwise; its fixed point is the gamma-quantile of the norms.

- Per-sample clipping in DP-SGD (`AdaptiveClipDPSGD`): each step also releases
  the batch's centred count sum(b_i - 1/2) + N(0, count_noise^2). The ledger
  records one DP-SGD event of the joint multiplier (`split_noise`).
- Shared updates (securediff.federation.update_clip): the indicator bits ride
  behind each update through the same blind aggregation.
- The forward-noise clip norm C of PFDM (`private_quantile`): a noisy
  bisection over the clients' image norms, charged as `QuantileCountEvent`s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from securediff.errors import ConfigError, PrivacyError
from securediff.privacy.ledger import Artefact, DPSGDEvent, PrivacyLedger, QuantileCountEvent
from securediff.rng import RandomSource

# Andrew et al.'s recommendation: count noise std = expected count / 20.
COUNT_NOISE_FRACTION = 1.0 / 20.0
# Never let the count take more than this share of the joint privacy (z_grad <= z / sqrt(3/4)).
MAX_COUNT_SHARE = 0.25


def geometric_update(clip: float, *, unclipped_fraction: float, target_quantile: float,
                     lr: float) -> float:
    """One step of the rule: C * exp(-lr * (b - gamma))."""
    return float(clip) * math.exp(-lr * (float(unclipped_fraction) - target_quantile))


def check_rule(*, target_quantile: float, lr: float) -> None:
    if not 0.0 < target_quantile < 1.0:
        raise ConfigError(f"target quantile must be in (0, 1), got {target_quantile}")
    if not (lr > 0.0 and math.isfinite(lr)):
        raise ConfigError(f"clip learning rate must be positive, got {lr}")


def noisy_count_step(clip: float, norms: np.ndarray, *, count_noise: float, expected_count: float,
                     target_quantile: float, lr: float, source: RandomSource) -> float:
    """Andrew et al.'s private step: the centred count sum(1[norm <= C] - 1/2)
    plus N(0, count_noise^2), divided by the expected count (public; Poisson
    batches vary), estimates the unclipped fraction; then the geometric rule."""
    centred = float(np.count_nonzero(np.asarray(norms) <= clip)) - 0.5 * int(np.asarray(norms).size)
    noisy = centred + count_noise * float(source.normal_np(1)[0])
    return geometric_update(clip, unclipped_fraction=noisy / expected_count + 0.5,
                            target_quantile=target_quantile, lr=lr)


# -- DP-SGD: the noise split between gradients and the count ----------------------
def count_noise_for(*, noise_multiplier: float, expected_batch_size: float) -> float:
    """sigma_b for the unclipped count: expected batch / 20 (Andrew et al.), raised
    where needed so that the count takes at most MAX_COUNT_SHARE of 1 / z^2."""
    floor = noise_multiplier / (2.0 * math.sqrt(MAX_COUNT_SHARE))
    return max(COUNT_NOISE_FRACTION * expected_batch_size, floor)


def split_noise(noise_multiplier: float, count_noise: float) -> float:
    """The gradients' multiplier z_grad such that the gradients (shift C) and the
    centred count (shift 1/2, std count_noise) together are a Gaussian of
    multiplier z: z_grad = (z^-2 - (2 count_noise)^-2)^(-1/2)."""
    rest = noise_multiplier**-2 - (2.0 * count_noise) ** -2
    if not rest > 0.0:
        raise ConfigError(
            f"count noise {count_noise} leaves nothing of multiplier {noise_multiplier} "
            "for the gradients")
    return rest**-0.5


class AdaptiveClipDPSGD:
    """DP-SGD whose per-sample clip norm tracks a quantile of the gradient norms.

    Wraps a `DPSGD` built with `ledger=None` and the gradients' multiplier
    (`split_noise`); this wrapper owns the accounting: `reserve` charges one
    DPSGDEvent of the joint multiplier with its `count_noise`. Each step runs
    the inner step at the current norm, counts the samples whose norm was at
    most that norm (from the per-sample norms the step returns), releases that
    count with noise, and moves the norm.
    """

    def __init__(self, *, inner: Any, ledger: PrivacyLedger, noise_multiplier: float,
                 count_noise: float, sample_rate: float, expected_batch_size: float,
                 clip: float, target_quantile: float, lr: float, source: RandomSource,
                 artefact: Artefact) -> None:
        check_rule(target_quantile=target_quantile, lr=lr)
        if inner.ledger is not None:
            raise PrivacyError("the inner DPSGD must not charge a ledger: the wrapper accounts")
        if abs(inner.noise_multiplier - split_noise(noise_multiplier, count_noise)) > 1e-12 * (
                noise_multiplier + 1.0):
            raise PrivacyError("the inner DPSGD's multiplier is not the gradients' share")
        if not (clip > 0.0 and math.isfinite(clip)):
            raise ConfigError(f"initial clip norm must be positive, got {clip}")
        self.inner = inner
        self.module = inner.module
        self.ledger = ledger
        self.noise_multiplier = float(noise_multiplier)
        self.count_noise = float(count_noise)
        self.sample_rate = float(sample_rate)
        self.expected_batch_size = float(expected_batch_size)
        self.clip = float(clip)
        self.target_quantile = float(target_quantile)
        self.lr = float(lr)
        self.source = source
        self.artefact = artefact
        self.reserved_steps = 0

    def reserve(self, steps: int) -> float:
        eps = self.ledger.charge(DPSGDEvent(self.noise_multiplier, self.sample_rate, steps,
                                            self.artefact, count_noise=self.count_noise,
                                            input=self.inner.input_data))
        self.reserved_steps += steps
        return eps

    def step(self, per_copy_loss_fn: Callable[..., torch.Tensor], *batch: torch.Tensor) -> torch.Tensor:
        if self.reserved_steps < 1:
            raise PrivacyError("no reserved DP-SGD steps left; call reserve() first")
        self.inner.max_grad_norm = self.clip
        norms = self.inner.step(per_copy_loss_fn, *batch)
        self.clip = noisy_count_step(self.clip, norms.detach().cpu().numpy(),
                                     count_noise=self.count_noise,
                                     expected_count=self.expected_batch_size,
                                     target_quantile=self.target_quantile, lr=self.lr,
                                     source=self.source)
        self.reserved_steps -= 1
        return norms

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
        else:
            self.inner.module._close()


# -- data-aware forward clipping: a private quantile of record norms ------------------
@dataclass(frozen=True)
class QuantilePlan:
    """A noisy bisection of `steps` counts in log space over [low, high]."""

    low: float
    high: float
    steps: int
    noise_std: float  # per client, per count
    target_quantile: float

    def event(self, data_id: str) -> QuantileCountEvent:
        return QuantileCountEvent(noise_std=self.noise_std, steps=self.steps, data_id=data_id)


def quantile_noise_for(*, epsilon: float, delta: float, steps: int) -> float:
    """The per-count noise std whose `steps` counts alone cost `epsilon` at
    `delta` (exact Gaussian: mu = sqrt(steps) / std)."""
    from securediff.privacy.accountants import gaussian_epsilon

    if not (epsilon > 0.0 and math.isfinite(epsilon)):
        raise ConfigError(f"quantile epsilon must be positive, got {epsilon}")
    lo, hi = 1e-3, 1.0  # epsilon falls as the noise grows
    while gaussian_epsilon(mu=math.sqrt(steps) / hi, delta=delta) > epsilon:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-9 * hi:
        mid = 0.5 * (lo + hi)
        if gaussian_epsilon(mu=math.sqrt(steps) / mid, delta=delta) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def private_quantile(norms_per_client: Sequence[np.ndarray], *, plan: QuantilePlan,
                     sources: Sequence[RandomSource]) -> float:
    """The plan's target quantile of all clients' record norms, privately.

    Each bisection step, every client counts its records with norm <= the
    candidate and adds N(0, noise_std^2) from its own source: each noised count
    is DP on its own, so the sum needs no trusted aggregator. The candidate
    moves up while the noisy fraction is below the target. Returns the
    geometric midpoint of the final bracket.
    """
    if len(norms_per_client) != len(sources) or not sources:
        raise ConfigError("one source per client is needed")
    total = sum(int(np.asarray(n).size) for n in norms_per_client)  # public member counts
    if total == 0:
        raise ConfigError("no records to take a quantile of")
    lo, hi = math.log(plan.low), math.log(plan.high)
    for _ in range(plan.steps):
        mid = 0.5 * (lo + hi)
        candidate = math.exp(mid)
        count = 0.0
        for norms, source in zip(norms_per_client, sources, strict=True):
            own = float(np.count_nonzero(np.asarray(norms) <= candidate))
            count += own + plan.noise_std * float(source.normal_np(1)[0])
        if count / total < plan.target_quantile:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def record_norms(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """L2 norm of each record (dim 0 indexes records)."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.linalg.norm(arr.reshape(arr.shape[0], -1).astype(np.float64), axis=1)


# -- the split shown by `securediff privacy ledger` -----------------------------------
def mechanism_split(events: Sequence[Any], *, delta: float, accountant: str) -> list[dict[str, Any]]:
    """Each mechanism's epsilon on its own (at `delta`, by `accountant`, under its
    own relation); a DP-SGD event with an adaptive count shows its gradients and
    its count apart. The parts do not add up to the composed epsilon (composition
    is sub-additive); they show where the budget goes."""
    from securediff.privacy.accountants import AccountantUnsupportedError, compose_epsilon
    from securediff.privacy.client_level import is_client_level

    def eps(event: Any) -> float | None:
        try:  # a client-level event alone: add/remove of one client's update
            return compose_epsilon([event.as_mechanism() if is_client_level(event) else event],
                                   delta=delta, accountant=accountant)
        except AccountantUnsupportedError:
            return None

    rows: list[dict[str, Any]] = []
    for ev in events:
        if ev.kind == "dpsgd" and ev.count_noise is not None:
            grad = split_noise(ev.noise_multiplier, ev.count_noise)
            parts = {"gradients": DPSGDEvent(grad, ev.sample_rate, ev.steps, ev.artefact),
                     "clip count": DPSGDEvent(2.0 * ev.count_noise, ev.sample_rate, ev.steps,
                                              ev.artefact)}
            rows.append({"mechanism": "dpsgd (adaptive clipping)", "steps": ev.steps,
                         "epsilon": eps(ev),
                         "parts": {name: {"noise_multiplier": p.noise_multiplier,
                                          "epsilon": eps(p)} for name, p in parts.items()}})
        else:
            name = f"{ev.kind} (per client, {ev.mechanism})" if is_client_level(ev) else ev.kind
            rows.append({"mechanism": name, "steps": getattr(ev, "steps", 1),
                         "epsilon": eps(ev)})
    return rows
