"""The federated run, from a validated set-up (RunSetup) to a finished run directory.

Order of a round (DESIGN.md, data flow): sample clients; each trains its
shared part on its shared-path data and returns the change; the change is
clipped (client-level), weighted by the client's public member count and sent
through the aggregation protocol, which returns only the weighted sum; the
global shared model moves by the weighted mean. Each client then trains what
it keeps. Ledgers are written to disk before any update leaves a client
(write-ahead: a crash can over-count a privacy cost, never under-count it),
and the round's state is checkpointed atomically at its end.

This module is the loop; its jobs live beside it: budget (the plan every ledger
is capped by), start (strategy, clients, noise-once), persistence and
stale_charges (checkpoints and what a resume reconciles), rounds and
distributed_round (one round each).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from protocols import Identities, TranscriptWriter, make_protocol, save_roster
from protocols.secagg.answers import FileAnswerLog
from protocols.transcript import last_round_index
from securediff.config import Config
from securediff.errors import ConfigError
from securediff.federation.budget import RunBudget, plan_budget
from securediff.federation.clients import Client
from securediff.federation.clipping import adaptive_forward
from securediff.federation.distributed_round import distributed_round
from securediff.federation.parallel import Serialized, resolve_workers
from securediff.federation.persistence import (
    read_checkpoint_record,
    read_ledgers,
    restore_checkpoint,
    save_checkpoint,
    write_ledgers,
)
from securediff.federation.public import pretrain_public
from securediff.federation.rounds import federated_round
from securediff.federation.setup import RunSetup
from securediff.federation.stale_charges import settle_stale_charges
from securediff.federation.start import (
    build_clients,
    build_strategy,
    choose_forward_clip_once,
    noise_shared_data,
)
from securediff.federation.stats_phase import (
    RELEASE_JSON,
    ReleasePlan,
    StoredRelease,
    load_release,
    plan_release,
    release_once,
)
from securediff.federation.strategies import Strategy
from securediff.rng import RandomSource
from securediff.storage import RunDirectory, atomic_write_json

Progress = Callable[[str, dict[str, Any]], None]
# Called with the run and a point of every checkpoint: "before" (nothing of it
# written), "staged" (the state staged, not committed), "committed" (progress.json
# written, the state not promoted), "after" (complete). What tests use to stop a
# run where a crash could: a hook that raises is a kill at that point.
CheckpointHook = Callable[["FederatedRun", str], None]


def _silent(event: str, info: dict[str, Any]) -> None:
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device = 'cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def make_source(config: Config) -> RandomSource:
    seed = config.run.insecure_seed
    return RandomSource.from_os() if seed is None else RandomSource.insecure_from_seed(seed)


@dataclass
class TrainingState:
    """What the round loop owns; rebuilt identically on resume."""

    strategy: Strategy
    clients: list[Client]
    rounds_done: int = 0
    round_logs: list[dict] = field(default_factory=list)
    update_clip: float | None = None  # adaptive: the norm for the next round's updates


class FederatedRun:
    """One run's engine: `set_up` (a start, or a resume from the last checkpoint),
    then `train` (the rounds still to run).

    `checkpoint_hooks` is where a crash is injected (CheckpointHook): each hook is
    called at every point of every checkpoint. Set it on the class to reach the
    runs that `train` and `resume` build; on an instance for that run only."""

    checkpoint_hooks: ClassVar[Sequence[CheckpointHook]] = ()

    def __init__(self, setup: RunSetup, run_dir: RunDirectory, *, progress: Progress | None = None) -> None:
        self.setup = setup
        self.cfg = setup.config
        self.run_dir = run_dir
        self.progress = Serialized(progress or _silent)
        self.device = resolve_device(self.cfg.run.device)
        self.workers = resolve_workers(self.cfg.run.workers, device=self.device)
        self.source = make_source(self.cfg)
        self.state: TrainingState | None = None
        self.budget: RunBudget | None = None
        self.noised_sha256: str | None = None  # the noised data's file, once written or restored
        self.index_offset = 0  # protocol round index of training round 0 in this session
        self.stats_plan: ReleasePlan | None = None  # [stats] release = true: planned at set-up
        self.stats_release: StoredRelease | None = None  # once released (or loaded)

    # -- set-up -----------------------------------------------------------------------
    def set_up(self, *, resume: bool) -> None:
        if not resume and adaptive_forward(self.cfg):
            self.setup = choose_forward_clip_once(self.setup, self.run_dir, self.source)
            self.cfg = self.setup.config
            self.progress("forward_clip", {"clip_norm": self.cfg.privacy.clip_norm, "t0": self.setup.t0})
        setup, cfg = self.setup, self.cfg
        strategy = build_strategy(setup)
        init_gen = self.source.child("init").torch_generator()
        strategy.init_global(init_gen)
        if strategy.global_model is not None:
            strategy.global_model.to(self.device)
        if cfg.public.dataset and not resume:  # on resume the checkpoint holds the pretrained models
            atomic_write_json(self.run_dir.file("public_pretraining.json"), pretrain_public(
                strategy.global_model, setup, source=self.source.child("public"), device=self.device))
            self.progress("public_pretrained", {"steps": cfg.public.steps})
        if cfg.stats.release:  # planned before the budget, which covers it at its noise floor
            self.stats_plan = plan_release(setup, public_source=self.source.child("stats-public"))
        self.budget = plan_budget(setup, strategy,
                                  release=None if self.stats_plan is None else self.stats_plan.floor_event)
        clients = build_clients(setup, strategy, self.budget, source=self.source, init_gen=init_gen,
                                device=self.device)
        self.state = TrainingState(strategy=strategy, clients=clients)
        if resume:
            self._restore()
            if self.stats_plan is not None:  # a committed release: what the strategy draws from
                self.stats_release = load_release(self.run_dir)
                if self.stats_release is not None:
                    strategy.attach_release(self.stats_release)
        else:
            if strategy.uses_noised_data:
                self.noised_sha256 = noise_shared_data(setup, clients, self.run_dir, device=self.device)
            self.write_ledgers()
            self._checkpoint()

    # -- persistence ------------------------------------------------------------------------
    def write_ledgers(self) -> None:
        write_ledgers(self.run_dir, self.state.clients)

    def _checkpoint(self) -> None:
        def reached(point: str) -> None:
            for hook in self.checkpoint_hooks:
                hook(self, point)

        reached("before")
        save_checkpoint(self.run_dir, self.state, noised_sha256=self.noised_sha256, reached=reached)
        reached("after")

    def _restore(self) -> None:
        progress = read_checkpoint_record(self.run_dir, rounds=self.cfg.federation.rounds)
        read_ledgers(self.run_dir, self.state.clients)
        grew = settle_stale_charges(self.state.clients, progress, budget=self.budget, cfg=self.cfg,
                                    distributed=self.state.strategy.distributed)
        if grew is not None:
            for cid, before, after in grew:
                self.progress("ledger_recharge", {"client": cid, "budget_before": before,
                                                  "budget_after": after})
            self.write_ledgers()
        self.noised_sha256 = restore_checkpoint(self.run_dir, self.state, progress, device=self.device)

    # -- the round loop -----------------------------------------------------------------------
    def _bind_protocol(self, identities: Identities):
        strategy, ddp, client_level = self.state.strategy, self.budget.distributed, self.budget.client_level
        params = dict(self.cfg.protocol)
        if strategy.distributed:  # the plan fixes the ring and the floor
            params.update(value_bits=ddp.skellam.secagg_value_bits,
                          min_contributors=ddp.skellam.min_survivors)
        if client_level is not None:
            params.update(client_level.protocol_params())
        protocol = make_protocol(self.cfg.federation.protocol, **params).bind(identities)
        if hasattr(protocol, "with_answers"):
            # Each simulated client claims a round index before it reveals a share, in a
            # file that outlives the process: a resumed session cannot be answered twice.
            protocol = protocol.with_answers(FileAnswerLog(self.run_dir.file("answers.jsonl")))
        return protocol

    def train(self) -> None:
        s, cfg = self.state, self.cfg
        strategy = s.strategy
        self.progress("run_start", {"clients": len(s.clients), "rounds": cfg.federation.rounds,
                                    "rounds_done": s.rounds_done})
        identities = Identities.generate([c.client_id for c in s.clients])
        # Distributed DP: one protocol round per step.
        per_round = self.budget.distributed.steps_per_round if strategy.distributed else 1
        protocol = self._bind_protocol(identities)
        # Each session (a start or a resume) pins its own roster; earlier ones stay.
        save_roster(self.run_dir.file("roster.json"), identities.roster(), append=True)
        if self.stats_plan is not None:  # once per run, before the first round; loaded on resume
            released = self.run_dir.file(RELEASE_JSON).exists()
            self.stats_release = release_once(self, identities)
            strategy.attach_release(self.stats_release)
            if not released:
                self._checkpoint()  # the ledgers' release events become part of the checkpoint
        transcript_path = self.run_dir.file("transcript.jsonl")
        # A resumed session moves on to protocol round indices no earlier session used
        # (a round that was unmasked before the crash must never be unmasked again).
        self.index_offset = max(0, last_round_index(transcript_path) + 1
                                - s.rounds_done * per_round) if strategy.federated else 0
        transcript = TranscriptWriter.open(
            transcript_path, identities=identities, protocol=protocol,
            planned_rounds=(s.rounds_done * per_round + self.index_offset,
                            cfg.federation.rounds * per_round + self.index_offset)
            if s.rounds_done < cfg.federation.rounds else None,
        ) if strategy.federated else None
        play_round = distributed_round if strategy.distributed else federated_round
        try:
            for r in range(s.rounds_done, cfg.federation.rounds):
                started = time.perf_counter()
                self.progress("round_start", {"round": r, "rounds": cfg.federation.rounds})
                log = play_round(self, r, protocol, identities, transcript)
                log.seconds = time.perf_counter() - started
                s.round_logs.append(vars(log))
                s.rounds_done = r + 1
                self.write_ledgers()
                self._checkpoint()
                self.progress("round_end", {"round": r, "rounds": cfg.federation.rounds, "log": vars(log)})
        finally:
            if transcript is not None:
                transcript.close()
