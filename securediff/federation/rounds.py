"""One federated round of the in-process run: sample clients; each trains its
shared part and returns the change; the change is clipped and sent through the
aggregation protocol, which returns only the weighted sum; the global shared
model moves by the weighted mean. Each client then trains what it keeps."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from protocols import ClientInput, check_against_plain, run_round
from protocols.errors import ProtocolAbort, ProtocolError
from securediff.config import Config
from securediff.errors import ConfigError
from securediff.federation.client_level import ClientLevelRound
from securediff.federation.client_runtime import ClientStep
from securediff.federation.clients import Client
from securediff.federation.clipping import bit_count, clip_with_bits, next_update_clip
from securediff.federation.parallel import map_clients
from securediff.rng import RandomSource

if TYPE_CHECKING:
    from securediff.federation.runner import FederatedRun


@dataclass
class RoundLog:
    round: int
    clients: list[str]
    survivors: list[str]  # finished the round
    contributors: list[str]  # whose updates the aggregate holds (see protocols.driver)
    update_norms: dict[str, float]
    bytes_up: int
    bytes_down: int
    seconds: float
    protocol_stats: dict = field(default_factory=dict)
    # Adaptive clipping: the norm this round's updates were clipped to (None: the
    # first round, unclipped) and the released weighted fraction that fitted.
    update_clip: float | None = None
    unclipped_fraction: float | None = None


def json_safe(value: Any) -> Any:
    """Protocol stats as plain JSON (numpy scalars and arrays become numbers and lists)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def simulated_dropouts(cfg: Config, source: RandomSource, round_index: int, protocol,
                       selected: list[str]) -> dict[str, str]:
    """Which clients disappear, and before which stage."""
    rate = cfg.federation.dropout_rate
    if rate <= 0:
        return {}
    rng = source.child(f"dropouts/round-{round_index}").numpy_generator()
    count = int(round(rate * len(selected)))
    dropped = rng.permutation(len(selected))[:count]
    client_stages = [spec.name for spec in protocol.stages if spec.sender == "client"]
    stage = cfg.federation.dropout_stage
    if stage and stage not in {spec.name for spec in protocol.stages}:
        raise ConfigError(f"federation.dropout_stage = {stage!r} is not a stage of "
                          f"{protocol.name}: {', '.join(s.name for s in protocol.stages)}")
    return {selected[i]: stage or client_stages[int(rng.integers(len(client_stages)))] for i in dropped}


def _select(run: FederatedRun, round_index: int) -> list[Client]:
    clients, plan = run.state.clients, run.budget.client_level
    if plan is not None and plan.sample_rate < 1.0:
        # Poisson sampling at client_fraction: what the client-level accountant assumes.
        keep = run.source.child(f"client-sampling/round-{round_index}").bernoulli(plan.sample_rate, len(clients))
        return [c for c, k in zip(clients, keep, strict=True) if k]
    k = max(1, round(run.cfg.federation.client_fraction * len(clients)))
    if k == len(clients):
        return list(clients)
    order = run.source.child(f"client-sampling/round-{round_index}").numpy_generator().permutation(len(clients))
    return [clients[i] for i in sorted(order[:k])]


def federated_round(run: FederatedRun, r: int, protocol, identities, transcript) -> RoundLog:
    s, cfg = run.state, run.cfg
    strategy = s.strategy
    selected = _select(run, r) if strategy.federated else []
    inputs, norms = {}, {}
    adaptive = cfg.privacy.clipping == "adaptive"
    clip = s.update_clip
    plan = run.budget.client_level
    client_level = ClientLevelRound(plan) if plan is not None else None
    if client_level is not None and strategy.federated:
        # Write-ahead, every client (sampled or not: sampling is part of the mechanism),
        # at the noise floor; a round with more Skellam shares keeps the floor's charge.
        for client in s.clients:
            client.ledger.charge(plan.event())

    step = ClientStep(
        strategy=strategy, round_index=r, write_ledgers=run.write_ledgers,
        dp=lambda client, artefact: run.budget.dpsgd_params.get(f"{client.client_id}/{artefact}"),
        # Adaptive and client-level clipping clip below, each its own way.
        update_clip=0.0 if adaptive or client_level is not None else cfg.federation.update_clip,
        each=lambda fn, clients: map_clients(fn, clients, workers=run.workers),
        started=lambda client, phase: run.progress("client_start", {"round": r, "client": client.client_id,
                                                                    "phase": phase}))
    updates = step.shared_updates(selected)
    for client, update in zip(selected, updates, strict=True):
        if client_level is not None:
            inputs[client.client_id] = client_level.client_input(
                update, noise_source=client.private_stream("client-level-share", r))
            norms[client.client_id] = min(float(np.linalg.norm(update)), plan.clip)
            continue
        # Adaptive: the bits ride behind the update through the same protocol.
        update, bits = clip_with_bits(update, clip) if adaptive else (update, [])
        norms[client.client_id] = float(np.linalg.norm(update))
        inputs[client.client_id] = ClientInput(vector=np.concatenate([update, bits]).astype(np.float32),
                                               weight=float(client.num_members))
    fraction = None
    survivors: list[str] = []
    contributors: list[str] = []
    bytes_up = bytes_down = 0
    stats: dict = {}
    if inputs:
        try:
            result = run_round(
                protocol, round_index=r + run.index_offset, inputs=inputs, identities=identities,
                transcript=transcript, dropouts=simulated_dropouts(cfg, run.source, r, protocol, list(inputs)),
                random_bytes=run.source.child(f"protocol/round-{r}").random_bytes)
        except ProtocolAbort as exc:
            # As in Bonawitz et al.: an aborted round releases nothing and the
            # shared model stays as it was; the next round starts afresh.
            result, stats = None, {"aborted": str(exc)}
            run.progress("round_aborted", {"round": r, "reason": str(exc)})
        if result is not None:
            # The simulation holds every input, so each round proves that blind
            # aggregation released the plain weighted sum (within the stated bound).
            check = check_against_plain(protocol, inputs, result)
            if not check["ok"]:
                raise ProtocolError(
                    f"round {r}: the {protocol.name} aggregate differs from the plain "
                    f"weighted sum by {check['max_abs_error']:.3g} > tolerance "
                    f"{check['tolerance']:.3g}")
            if client_level is not None:
                noisy = client_level.noisy_sum(result.weighted_sum, contributors=len(result.contributors),
                                               noise_source=run.source.child(f"client-level-noise/round-{r}"))
                mean = mean_update = client_level.step(noisy)
            else:
                mean = np.asarray(result.weighted_sum, dtype=np.float64) / result.total_weight
                mean_update = mean[:mean.size - bit_count(clip)] if adaptive else mean
            strategy.apply_global(strategy.global_vector() + mean_update)
            if adaptive:
                bits_mean = np.clip(mean[mean_update.size:], 0.0, 1.0)  # quantization error
                fraction = float(bits_mean[0]) if clip is not None else None
                s.update_clip = next_update_clip(clip, bits_mean, target_quantile=cfg.privacy.clip_quantile,
                                                 lr=cfg.privacy.clip_lr)
            survivors, contributors = list(result.survivors), list(result.contributors)
            bytes_up, bytes_down = int(result.bytes_up), int(result.bytes_down)
            stats = json_safe(result.stats | {"check_against_plain": check})
        strategy.finish_round(s.clients)
    elif client_level is not None and strategy.federated:
        # Nobody sampled: the release is still the noise (the accountant's mechanism
        # releases a noisy sum every round; a noise-free "no change" would not be it).
        zero = np.zeros_like(strategy.global_vector())
        noisy = client_level.noisy_sum(zero, contributors=0,
                                       noise_source=run.source.child(f"client-level-noise/round-{r}"))
        strategy.apply_global(strategy.global_vector() + client_level.step(noisy))
        strategy.finish_round(s.clients)
    strategy.server_round(r, run.source)

    step.personal(s.clients)
    return RoundLog(round=r, clients=[c.client_id for c in selected], survivors=survivors,
                    contributors=contributors, update_norms=norms, bytes_up=bytes_up,
                    bytes_down=bytes_down, seconds=0.0, protocol_stats=stats,
                    update_clip=clip if adaptive else None, unclipped_fraction=fraction)
