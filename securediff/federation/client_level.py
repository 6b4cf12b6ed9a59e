"""One round of client-level DP aggregation: clip -> (share noise) -> protocol ->
(central noise) -> the model's step. The runner and the client-level audit
(audits/client_level.py) both go through `ClientLevelRound`, so the audit
measures the code path a run takes.

Gaussian (central): clients send their clipped updates with weight 1; after the
protocol releases the sum, the aggregator adds N(0, (z S)^2) per coordinate.
Skellam (distributed, secagg only): each client sends its clipped update scaled
to integers plus a Skellam share for `min_survivors` contributors; secagg never
unmasks a sum with fewer, so the noise floor holds against the aggregator.
Either way the step is the noisy sum over q n, the expected number of clients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from protocols import ClientInput
from securediff.errors import ConfigError
from securediff.privacy.accountants import ACCOUNTANTS
from securediff.privacy.client_level import ClientLevelEvent, calibrate_client_gaussian
from securediff.privacy.skellam import (
    SkellamPlan,
    check_noise_floor,
    decode_sum,
    encode_share,
    plan_skellam,
)
from securediff.privacy.skellam_accounting import calibrate_skellam_noise
from securediff.rng import RandomSource

__all__ = ["ClientLevelPlan", "ClientLevelRound", "clip_update", "plan_client_level"]


@dataclass(frozen=True)
class ClientLevelPlan:
    """Fixed before the first round: calibrated so that `rounds` rounds at the
    noise floor meet the client-level target epsilon at `delta`."""

    mechanism: str  # gaussian | skellam
    clip: float  # S
    noise_multiplier: float  # gaussian: std / S; skellam: its plan's (for the record)
    sample_rate: float  # q = federation.client_fraction
    num_clients: int
    rounds: int
    skellam: SkellamPlan | None = None

    @property
    def expected_clients(self) -> float:
        return self.sample_rate * self.num_clients

    @property
    def noise_added_by(self) -> str:
        return "clients" if self.mechanism == "skellam" else "aggregator"

    def protocol_params(self) -> dict:
        """What secagg needs for integer shares: a ring wide enough, and the floor."""
        if self.skellam is None:
            return {}
        return {"value_bits": self.skellam.secagg_value_bits, "min_contributors": self.skellam.min_survivors}

    def event(self, *, contributors: int | None = None, rounds: int = 1) -> ClientLevelEvent:
        """The ledger event of `rounds` rounds whose sums held `contributors` shares
        (skellam; None: the floor). Gaussian noise does not depend on who survived."""
        common = dict(mechanism=self.mechanism, clip_norm=self.clip, sample_rate=self.sample_rate,
                      steps=rounds, noise_added_by=self.noise_added_by)
        if self.skellam is None:
            return ClientLevelEvent(noise_multiplier=self.noise_multiplier, **common)
        sk = self.skellam
        n = sk.min_survivors if contributors is None else max(contributors, sk.min_survivors)
        return ClientLevelEvent(l1_sensitivity=sk.l1_sensitivity, l2_sensitivity=sk.l2_sensitivity,
                                noise_variance=n * sk.share_variance, scale=sk.scale,
                                min_survivors=sk.min_survivors, **common)


def plan_client_level(*, mechanism: str, clip: float, target_epsilon: float | None,
                      noise_multiplier: float | None, sample_rate: float, num_clients: int, rounds: int,
                      delta: float, dim: int, accountant: str = "pld", min_survivors: int = 0) -> ClientLevelPlan:
    """Calibrate (or take) the noise. Exactly one of `target_epsilon` and
    `noise_multiplier`. Skellam is accounted by RDP (the only accountant of it)."""
    if (target_epsilon is None) == (noise_multiplier is None):
        raise ConfigError("give exactly one of privacy.client_epsilon and privacy.client_noise_multiplier")
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"unknown accountant {accountant!r}")
    if mechanism == "gaussian":
        z = noise_multiplier if noise_multiplier is not None else calibrate_client_gaussian(
            target_epsilon=target_epsilon, sample_rate=sample_rate, rounds=rounds, delta=delta,
            accountant="pld" if accountant == "exact" and sample_rate < 1 else accountant)
        return ClientLevelPlan("gaussian", clip, float(z), sample_rate, num_clients, rounds)
    if mechanism != "skellam":
        raise ConfigError(f"privacy.client_noise must be gaussian or skellam, got {mechanism!r}")
    floor = min_survivors or math.ceil(0.8 * num_clients)
    if not 1 <= floor <= num_clients:
        raise ConfigError(f"privacy.ddp_min_survivors = {floor} must be in [1, {num_clients}]")

    def build(z: float) -> SkellamPlan:
        return plan_skellam(dim=dim, l2_clip=clip, noise_multiplier=z, min_survivors=floor,
                            max_clients=num_clients, expected_batch=sample_rate * num_clients)

    z = noise_multiplier if noise_multiplier is not None else calibrate_skellam_noise(
        build, target_epsilon=target_epsilon, sample_rate=sample_rate, steps=rounds, delta=delta)
    plan = build(float(z))
    return ClientLevelPlan("skellam", clip, plan.noise_multiplier, sample_rate, num_clients, rounds, plan)


def clip_update(update: np.ndarray, clip: float) -> np.ndarray:
    """The update scaled down to L2 norm `clip` if longer (float64)."""
    u = np.asarray(update, dtype=np.float64)
    norm = float(np.linalg.norm(u))
    return u * (clip / norm) if norm > clip else u


class ClientLevelRound:
    """The client side (`client_input`) and the aggregator side (`noisy_sum`,
    `step`) of one round under a plan. Noise comes only from the sources given."""

    def __init__(self, plan: ClientLevelPlan) -> None:
        self.plan = plan

    def client_input(self, update: np.ndarray, *, noise_source: RandomSource | None) -> ClientInput:
        """What a client hands the protocol: its clipped update (weight 1: a public,
        data-independent weight), integer-encoded with its noise share for skellam."""
        clipped = clip_update(update, self.plan.clip)
        if self.plan.skellam is None:
            return ClientInput(vector=clipped.astype(np.float32), weight=1.0)
        if noise_source is None:
            raise ConfigError("a Skellam share needs the client's noise source")
        return ClientInput(vector=encode_share(clipped, self.plan.skellam, noise_source), weight=1.0)

    def noisy_sum(self, weighted_sum: np.ndarray, *, contributors: int,
                  noise_source: RandomSource | None) -> np.ndarray:
        """The released sum with its noise: the aggregator's Gaussian, or the
        decoded Skellam sum (whose noise the clients already added)."""
        if self.plan.skellam is not None:
            check_noise_floor(self.plan.skellam, contributors)
            total = np.rint(np.asarray(weighted_sum, dtype=np.float64)).astype(np.int64)
            return decode_sum(total, self.plan.skellam)
        s = np.asarray(weighted_sum, dtype=np.float64)
        if self.plan.noise_multiplier == 0.0:  # only the audit's noise-off control
            return s
        if noise_source is None:
            raise ConfigError("central Gaussian noise needs the aggregator's noise source")
        return s + self.plan.noise_multiplier * self.plan.clip * noise_source.normal_np(s.size)

    def step(self, noisy_sum: np.ndarray) -> np.ndarray:
        """The model's change: the noisy sum over the EXPECTED number of clients
        (dividing by the realised count would make the step depend on who took part)."""
        return np.asarray(noisy_sum, dtype=np.float64) / self.plan.expected_clients

    def inputs(self, updates: Mapping[str, np.ndarray],
               sources: Mapping[str, RandomSource | None]) -> dict[str, ClientInput]:
        return {cid: self.client_input(u, noise_source=sources.get(cid)) for cid, u in updates.items()}
