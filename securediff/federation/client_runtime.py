"""What a client does to its own data and updates, written once for both ways a
client runs: simulated inside `securediff train` (runner, start, rounds) and as
a Flower node (flower/trainer.py). Those two keep the orchestration and the
files; the privacy logic is here, so a node plans, charges, noises and clips
exactly what the in-process runner does for the same client."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from securediff.config import Config
from securediff.federation.clients import Client
from securediff.federation.clipping import adaptive_forward, quantile_plan
from securediff.federation.setup import RunSetup
from securediff.federation.strategies import DPSGDParams, Strategy
from securediff.privacy.accountants import calibrate_noise_multiplier
from securediff.privacy.adaptive import count_noise_for
from securediff.privacy.forward import forward_sigma, noise_once
from securediff.privacy.labels import randomized_response
from securediff.privacy.ledger import (
    DPSGDEvent,
    ForwardNoiseEvent,
    MechanismEvent,
    PrivacyLedger,
    RandomizedResponseEvent,
    Release,
)
from securediff.rng import RandomSource

# A trial ledger charges the whole plan; its own cap must never be what refuses.
UNCAPPED = 1e12


def members_id(client_id: str) -> str:
    """The data id of a client's member records in its ledger (noised once, ever)."""
    return f"{client_id}/members"


def clip_update(update: np.ndarray, bound: float) -> np.ndarray:
    """A shared update scaled to L2 norm `bound` where it is longer
    (federation.update_clip; 0 leaves it as it is)."""
    norm = float(np.linalg.norm(update))
    if bound > 0 and norm > bound:
        return update * (bound / norm)
    return update


def new_client(setup: RunSetup, strategy: Strategy, *, index: int, client_id: str, ledger: PrivacyLedger,
               source: RandomSource, init_gen: torch.Generator, device: torch.device) -> Client:
    """Partition `index` of `setup` as a client on `device`: its member records,
    ledger and random source, and the personal model the strategy keeps (with its
    optimizer; the public model's weights where the run pretrained one)."""
    split = setup.partition.clients[index]
    x = torch.from_numpy(setup.client_images(index, split.member_indices)).to(device)
    y = torch.from_numpy(setup.dataset.labels[split.member_indices]).to(device)
    client = Client(client_id=client_id, index=index, x=x, y=y, ledger=ledger, source=source)
    strategy.init_client(client, init_gen)
    if client.model is not None:
        client.model.to(device)
        if setup.config.public.dataset:  # every personal model starts from the public one
            client.model.load_state_dict(strategy.global_model.state_dict())
        client.optimizer = torch.optim.Adam(client.model.parameters(), lr=setup.config.training.lr)
    return client


# -- the client's plan: its mechanisms and what they cost ------------------------------
def personal_steps_per_round(config: Config) -> int:
    return max(0, math.ceil(config.training.personal_steps / config.federation.rounds))


def personal_steps(config: Config) -> int:
    """Personal DP-SGD steps a round charges (a strategy without a shared model spends
    the round's local steps on what it keeps)."""
    steps = personal_steps_per_round(config)
    if config.federation.strategy_rules.personal_runs_local_steps:
        return steps + config.federation.local_steps
    return steps


def dpsgd_params(cfg: Config, *, n: int, steps_per_round: int) -> DPSGDParams:
    q = min(1.0, cfg.training.batch_size / n)
    total = steps_per_round * cfg.federation.rounds
    sigma = calibrate_noise_multiplier(target_epsilon=cfg.privacy.dpsgd_epsilon, sample_rate=q,
                                       steps=total, delta=cfg.privacy.delta, accountant=cfg.privacy.accountant)
    # Adaptive per-sample clipping spends part of the same multiplier on the unclipped count.
    count = (count_noise_for(noise_multiplier=sigma, expected_batch_size=q * n)
             if cfg.privacy.clipping == "adaptive" else None)
    return DPSGDParams(noise_multiplier=sigma, sample_rate=q, steps_per_round=steps_per_round,
                       count_noise=count)


def dpsgd_params_by_artefact(cfg: Config, *, members: int) -> dict[str, DPSGDParams]:
    """The client's DP-SGD per artefact ("shared", "personal"), calibrated for its
    own member count and the run's steps and target."""
    rules = cfg.federation.strategy_rules
    on = {"shared": cfg.privacy.dpsgd_shared and rules.plans_dpsgd_shared,
          "personal": cfg.privacy.dpsgd_personal and rules.plans_dpsgd_personal}
    steps = {"shared": cfg.federation.local_steps, "personal": personal_steps(cfg)}
    return {a: dpsgd_params(cfg, n=members, steps_per_round=steps[a]) for a in ("shared", "personal") if on[a]}


def dpsgd_events(cfg: Config, params: Mapping[str, DPSGDParams], *, rounds: int) -> list[DPSGDEvent]:
    """The DP-SGD steps of `rounds` rounds, one event per artefact."""
    return [DPSGDEvent(dp.noise_multiplier, dp.sample_rate, dp.steps_per_round * rounds, artefact,
                       count_noise=dp.count_noise, input=cfg.federation.strategy_rules.dpsgd_input(artefact))
            for artefact, dp in params.items() if rounds > 0]


def noises_data(cfg: Config) -> bool:
    """Whether the client's shared path trains on its data noised once to t0."""
    return cfg.federation.strategy_rules.noises_data(hybrid_forward=cfg.federation.hybrid_forward)


def planned_forward_event(setup: RunSetup, client_id: str) -> ForwardNoiseEvent:
    """The event noise_once will charge for this client (the same sigma, C and t0)."""
    return ForwardNoiseEvent(sigma=forward_sigma(float(setup.schedule.abar[setup.t0])),
                             clip_norm=setup.config.privacy.clip_norm, t0=setup.t0,
                             data_id=members_id(client_id))


def noising_events(setup: RunSetup, client_id: str) -> list[MechanismEvent]:
    """What noising the client's data once charges, in that order: the noised counts
    that chose C (adaptive), the forward noise, the randomized-response labels."""
    cfg = setup.config
    events: list[MechanismEvent] = []
    if adaptive_forward(cfg):
        events.append(quantile_plan(cfg, setup).event(members_id(client_id)))
    events.append(planned_forward_event(setup, client_id))
    if cfg.privacy.labels == "randomized-response":
        events.append(RandomizedResponseEvent(epsilon=cfg.privacy.label_epsilon,
                                              num_classes=setup.dataset.num_classes))
    return events


def planned_ledger(setup: RunSetup, client_id: str, params: Mapping[str, DPSGDParams], *, rounds_left: int,
                   held: PrivacyLedger | None = None) -> PrivacyLedger:
    """What the client's ledger will hold at the end of the run: what it holds now
    (`held`), the once-noising its ledger does not record yet, and the DP-SGD steps
    of the rounds still to train. Uncapped, in the order they are charged (a
    ledger's peak epsilon follows the order)."""
    cfg = setup.config
    # The releases other runs made from this x~ count jointly with this run's.
    ledger = PrivacyLedger(client_id=client_id, budget_epsilon=UNCAPPED, delta=cfg.privacy.delta,
                           accountant=cfg.privacy.accountant, releases=held.releases if held else ())
    for event in held.events if held else ():
        ledger.charge(event)
    if noises_data(cfg) and members_id(client_id) not in ledger.noised_data_ids():
        for event in noising_events(setup, client_id):
            ledger.charge(event)
    for event in dpsgd_events(cfg, params, rounds=rounds_left):
        ledger.charge(event)
    return ledger


def planned_epsilon(ledger: PrivacyLedger) -> float:
    """The largest per-artefact epsilon a planned ledger reaches (0 where it holds none)."""
    return max((ledger.peak_epsilon(a) for a in {e.artefact for e in ledger.events}), default=0.0)


# -- the once-noising of its data --------------------------------------------------
def noise_client_data(setup: RunSetup, client: Client) -> tuple[torch.Tensor, torch.Tensor]:
    """x~ and the shared path's labels, on the CPU: the client's member images
    clipped and noised to t0, its labels passed as configured, each charged to its
    ledger as `noising_events` lists them. Only in memory: the caller writes the
    ledger before it stores or uses x~ (write-ahead), and a second call for the
    same data is refused by the ledger (data is noised once, ever)."""
    cfg, data_id = setup.config, members_id(client.client_id)
    if adaptive_forward(cfg):  # the counts that chose C (start.choose_forward_clip_once)
        client.ledger.charge(quantile_plan(cfg, setup).event(data_id))
    x_tilde = noise_once(client.x.cpu().double(), clip_norm=cfg.privacy.clip_norm, t0=setup.t0,
                         abar=setup.schedule.abar, source=client.source.child("forward-noise"),
                         ledger=client.ledger, data_id=data_id).float()
    labels = client.y.cpu().numpy()
    if cfg.privacy.labels == "randomized-response":
        labels = randomized_response(labels, epsilon=cfg.privacy.label_epsilon,
                                     num_classes=setup.dataset.num_classes,
                                     source=client.source.child("label-rr"), ledger=client.ledger)
    return x_tilde, torch.as_tensor(labels, dtype=torch.int64)


# -- one round of a client ----------------------------------------------------------
R = TypeVar("R")


def _in_turn(fn: Callable[[Client], R], clients: Sequence[Client]) -> list[R]:
    return [fn(c) for c in clients]


def _nothing(client: Client, phase: str) -> None:
    return None


@dataclass(frozen=True)
class ClientStep:
    """Round `round_index` of each client it is given, in the one order both
    runtimes keep: `shared_updates` trains the shared part, clips the change,
    records the release and writes the ledgers before any update is handed back to
    leave its client; `personal` then trains what the client keeps.

    The runtime is injected: `dp` (the client's DP-SGD parameters of an artefact,
    None: none), `write_ledgers` (puts every charge on disk), `each` (maps a step over
    clients: in turn, or the runner's workers), `started` (told as a client starts
    a phase). `update_clip` is federation.update_clip (0 leaves clipping to the
    caller: adaptive and client-level clipping); `run_id` is a node's run, whose
    shared release on x~ its ledger records (an in-process run's ledger holds that
    run alone and records none)."""

    strategy: Strategy
    round_index: int
    dp: Callable[[Client, str], DPSGDParams | None]
    write_ledgers: Callable[[], None]
    update_clip: float = 0.0
    run_id: str | None = None
    each: Callable[[Callable[[Client], Any], Sequence[Client]], list[Any]] = _in_turn
    started: Callable[[Client, str], None] = _nothing

    def shared_updates(self, clients: Sequence[Client]) -> list[np.ndarray]:
        updates = self.each(self._shared, clients)
        # Write-ahead: the DP-SGD steps and releases are on disk before an update leaves.
        self.write_ledgers()
        return updates

    def personal(self, clients: Sequence[Client]) -> None:
        self.each(self._personal, [c for c in clients if c.model is not None])

    def _shared(self, client: Client) -> np.ndarray:
        self.started(client, "shared")
        dp = self.dp(client, "shared")
        update = clip_update(self.strategy.local_update(client, self.round_index, dp), self.update_clip)
        if self.run_id is not None and self.strategy.uses_noised_data:
            # This run's release joins every earlier run's on the same x~: the claim is
            # theirs jointly (a plain run's release keeps it at the forward-noise view
            # whatever DP-SGD this run adds).
            client.ledger.record_release(Release(self.run_id, "shared", through_dpsgd_only=dp is not None))
        return update

    def _personal(self, client: Client) -> None:
        self.started(client, "personal")
        self.strategy.personal_train(client, self.round_index, self.dp(client, "personal"))
