"""Adaptive clipping in a federated run: the shared updates' clip norm, and the
data-aware forward-noise clip norm C of PFDM (the rules: privacy/adaptive.py).

Shared updates. Each client appends indicator bits to its update and the bits
travel through the same blind aggregation, so the aggregator learns only the
weighted fraction of clients whose update fitted under the norm. In the first
round (no norm yet) the bits are for a geometric grid of norms 2^-10 .. 2^10 and
the update is not clipped; the grid's first norm that fits the target quantile
of the weight starts the rule; from then on one bit and Andrew et al.'s
geometric step. The bits cost no privacy in any strategy here: where a client's
update carries a guarantee, that update is itself a DP release (post-processing
of the once-noised data in pfdm, or the output of the client's own DP-SGD), and
its norm is post-processing of it; where it carries none (fedavg, layer-split
without DP-SGD) there is no claim to pay for. Distributed DP, where a single
update is not DP on its own, would need noised bits.
"""

from __future__ import annotations

import math

import numpy as np

from securediff.config import Config
from securediff.errors import ConfigError
from securediff.federation.setup import RunSetup, set_up_run
from securediff.privacy.accountants import compose_epsilon
from securediff.privacy.adaptive import (
    QuantilePlan,
    geometric_update,
    private_quantile,
    quantile_noise_for,
    record_norms,
)
from securediff.privacy.forward import forward_sigma
from securediff.privacy.ledger import ForwardNoiseEvent
from securediff.rng import RandomSource

WARMUP_GRID = 2.0 ** np.arange(-10, 11)
QUANTILE_STEPS = 12  # bisection steps over a 1024x range: 0.2% resolution


# -- shared updates -----------------------------------------------------------------------
def clip_with_bits(update: np.ndarray, clip: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The update clipped to `clip` and its bits (1.0: its norm fitted). With no
    norm yet, the update unclipped and one bit per norm of WARMUP_GRID."""
    norm = float(np.linalg.norm(update))
    if clip is None:
        return update, (norm <= WARMUP_GRID).astype(np.float64)
    bits = np.array([1.0 if norm <= clip else 0.0])
    return (update * (clip / norm) if norm > clip else update), bits


def next_update_clip(clip: float | None, mean_bits: np.ndarray, *, target_quantile: float,
                     lr: float) -> float:
    """The next round's norm from the weighted mean of the bits."""
    if clip is None:
        fits = np.flatnonzero(mean_bits >= target_quantile)
        return float(WARMUP_GRID[fits[0]] if fits.size else WARMUP_GRID[-1])
    return geometric_update(clip, unclipped_fraction=float(mean_bits[0]),
                            target_quantile=target_quantile, lr=lr)


def bit_count(clip: float | None) -> int:
    return WARMUP_GRID.size if clip is None else 1


# -- data-aware forward-noise clip norm ---------------------------------------------------------
def adaptive_forward(cfg: Config) -> bool:
    return cfg.privacy.clipping == "adaptive" and cfg.federation.strategy_rules.forward_noise


def quantile_plan(cfg: Config, setup: RunSetup) -> QuantilePlan:
    """The bisection every client runs (public: depends on the config only).
    Images lie in [-1, 1], so no norm exceeds sqrt(d)."""
    p = cfg.privacy
    c, h, w = setup.dataset.image_shape
    high = math.sqrt(c * h * w)
    eps = p.clip_quantile_epsilon if p.clip_quantile_epsilon is not None else p.target_epsilon / 20
    return QuantilePlan(low=high / 1024.0, high=high, steps=QUANTILE_STEPS,
                        noise_std=quantile_noise_for(epsilon=eps, delta=p.delta, steps=QUANTILE_STEPS),
                        target_quantile=p.clip_quantile)


def calibrate_t0_after(qplan: QuantilePlan, *, clip_norm: float, setup: RunSetup, data_id: str) -> int:
    """The smallest t0 at which the counts and the forward noise together stay
    within target_epsilon (exact Gaussian composition: both are replace-one)."""
    p, abar, T = setup.config.privacy, setup.schedule.abar, setup.schedule.T

    def eps(t0: int) -> float:
        fwd = ForwardNoiseEvent(sigma=forward_sigma(float(abar[t0])), clip_norm=clip_norm, t0=t0,
                                data_id=data_id)
        return compose_epsilon([qplan.event(data_id), fwd], delta=p.delta, accountant="exact")

    if eps(T - 1) > p.target_epsilon:
        raise ConfigError(f"no t0 below T keeps the private quantile and the forward noise within "
                          f"privacy.target_epsilon = {p.target_epsilon}")
    lo, hi = 0, T - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if eps(mid) <= p.target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi


def choose_forward_clip(setup: RunSetup, sources: list[RandomSource], data_ids: list[str]) -> RunSetup:
    """The set-up with C = the private quantile of the clients' member image norms
    and t0 calibrated for the rest of the budget. The caller has charged each
    client's QuantileCountEvent before this draws."""
    qplan = quantile_plan(setup.config, setup)
    norms = [record_norms(setup.client_images(i, split.member_indices))
             for i, split in enumerate(setup.partition.clients)]
    clip = private_quantile(norms, plan=qplan, sources=sources)
    t0 = calibrate_t0_after(qplan, clip_norm=clip, setup=setup, data_id=data_ids[0])
    return set_up_run(setup.config.replace(privacy={"clip_norm": clip, "t0": t0}))
