"""The federated run, from a validated plan to a finished run directory.

Order of a round (DESIGN.md, data flow): sample clients; each trains its
shared part on its shared-path data and returns the change; the change is
clipped (client-level), weighted by the client's public member count and sent
through the aggregation protocol, which returns only the weighted sum; the
global shared model moves by the weighted mean. Each client then trains what
it keeps. Ledgers are written to disk before any update leaves a client
(write-ahead: a crash can over-count a privacy cost, never under-count it),
and the round's state is checkpointed atomically at its end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from protocols import (
    ClientInput,
    Identities,
    TranscriptWriter,
    check_against_plain,
    make_protocol,
    run_round,
    save_roster,
)
from protocols.errors import ProtocolAbort, ProtocolError
from protocols.secagg.answers import FileAnswerLog
from protocols.transcript import last_round_index
from securediff.config import Config
from securediff.data.tint import client_tint
from securediff.errors import CheckpointError
from securediff.federation.checkpoint import load_round_state, save_round_state
from securediff.federation.client_level import ClientLevelPlan, ClientLevelRound, plan_client_level
from securediff.federation.clients import Client
from securediff.federation.clipping import (
    adaptive_forward,
    bit_count,
    choose_forward_clip,
    clip_with_bits,
    next_update_clip,
    quantile_plan,
)
from securediff.federation.distributed import (
    ClientGradients,
    DistributedPlan,
    NoisedPart,
    apply_noisy_sum,
    client_share,
    decode_sum,
    plan_distributed,
    skellam_event,
)
from securediff.federation.parallel import Serialized, map_clients, resolve_workers
from securediff.federation.progress_file import (
    check_rosters,
    read_progress,
    roster_digests,
    seal_progress,
)
from securediff.federation.public import pretrain_public
from securediff.federation.setup import Plan
from securediff.federation.strategies import (
    STRATEGY_CLASSES,
    Centralized,
    DPPlan,
    Hybrid,
    PublicOnly,
    Strategy,
    TrainSettings,
)
from securediff.privacy.accountants import calibrate_noise_multiplier
from securediff.privacy.adaptive import count_noise_for
from securediff.privacy.client_level import ClientLevelEvent
from securediff.privacy.forward import forward_sigma, noise_once
from securediff.privacy.labels import randomized_response
from securediff.privacy.ledger import (
    DPSGDEvent,
    ForwardNoiseEvent,
    PrivacyLedger,
    RandomizedResponseEvent,
    event_from_dict,
)
from securediff.rng import RandomSource
from securediff.storage import (
    RunDirectory,
    atomic_write_json,
    load_tensors,
    promote_staged,
    read_json,
    resolve_committed,
    save_tensors,
    staged_path,
)

Progress = Callable[[str, dict[str, Any]], None]


def _silent(event: str, info: dict[str, Any]) -> None:
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from securediff.errors import ConfigError

        raise ConfigError("run.device = 'cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def make_source(config: Config) -> RandomSource:
    seed = config.run.insecure_seed
    return RandomSource.from_os() if seed is None else RandomSource.insecure_from_seed(seed)


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


@dataclass
class TrainingState:
    """What the round loop owns; rebuilt identically on resume."""

    strategy: Strategy
    clients: list[Client]
    dp_shared: DPPlan | None
    dp_personal: DPPlan | None
    rounds_done: int = 0
    round_logs: list[dict] = field(default_factory=list)
    update_clip: float | None = None  # adaptive: the norm for the next round's updates


def _members_id(client_id: str) -> str:
    """The data id of a client's member records in its ledger (noised once, ever)."""
    return f"{client_id}/members"


def personal_steps_per_round(config: Config) -> int:
    return max(0, math.ceil(config.training.personal_steps / config.federation.rounds))


def build_strategy(plan: Plan) -> Strategy:
    cfg = plan.config
    settings = TrainSettings(
        batch_size=cfg.training.batch_size, lr=cfg.training.lr,
        label_dropout=cfg.diffusion.label_dropout, local_steps=cfg.federation.local_steps,
        personal_steps_per_round=personal_steps_per_round(cfg),
        max_grad_norm=cfg.privacy.max_grad_norm, noise_multiplicity=cfg.privacy.noise_multiplicity,
        dpsgd_shared=cfg.privacy.dpsgd_shared, dpsgd_personal=cfg.privacy.dpsgd_personal,
        secure_noise=cfg.privacy.secure_noise, clip_quantile=cfg.privacy.clip_quantile, clip_lr=cfg.privacy.clip_lr,
    )
    cls = STRATEGY_CLASSES[cfg.federation.strategy]
    kwargs: dict[str, Any] = dict(spec=plan.spec, schedule=plan.schedule, t0=plan.t0, settings=settings)
    if cls is Centralized:
        kwargs.update(centralized_steps=cfg.training.centralized_steps, rounds=cfg.federation.rounds)
    if cls is Hybrid:
        kwargs.update(rounds=cfg.federation.rounds, personal_t=cfg.federation.personal_t,
                      personal_steps=cfg.training.personal_steps, forward=cfg.federation.hybrid_forward)
    if cls is PublicOnly and cfg.data.dataset == "colored-digits":
        kwargs.update(tints=[client_tint(i, plan.partition.num_clients)
                             for i in range(plan.partition.num_clients)])
    return cls(**kwargs)


def _dp_plan(cfg: Config, *, n: int, steps_per_round: int) -> DPPlan:
    q = min(1.0, cfg.training.batch_size / n)
    total = steps_per_round * cfg.federation.rounds
    sigma = calibrate_noise_multiplier(target_epsilon=cfg.privacy.dpsgd_epsilon, sample_rate=q,
                                       steps=total, delta=cfg.privacy.delta, accountant=cfg.privacy.accountant)
    # Adaptive per-sample clipping spends part of the same multiplier on the unclipped count.
    count = (count_noise_for(noise_multiplier=sigma, expected_batch_size=q * n)
             if cfg.privacy.clipping == "adaptive" else None)
    return DPPlan(noise_multiplier=sigma, sample_rate=q, steps_per_round=steps_per_round,
                  count_noise=count)


def _dpsgd_input(strategy: str, artefact: str) -> str:
    """What a planned DP-SGD event trains on (DPSGDEvent.input): PFDM's shared model x~."""
    return "noised" if strategy == "pfdm" and artefact == "shared" else "raw"


def _stale_events(at_checkpoint, now) -> list | None:
    """What `now` holds beyond `at_checkpoint` (DP-SGD steps merged into a recorded
    event count as an event of the extra steps), or None if `now` holds less."""
    if len(now) < len(at_checkpoint):
        return None
    stale = []
    for old, new in zip(at_checkpoint, now, strict=False):
        if isinstance(old, DPSGDEvent) and isinstance(new, DPSGDEvent) and (
            (old.noise_multiplier, old.sample_rate, old.artefact, old.count_noise, old.input)
            == (new.noise_multiplier, new.sample_rate, new.artefact, new.count_noise, new.input)
        ) and new.steps >= old.steps:
            if new.steps > old.steps:
                stale.append(replace(new, steps=new.steps - old.steps))
        elif isinstance(old, ClientLevelEvent) and old.same_mechanism(new) and new.steps >= old.steps:
            # Client-level rounds merge into the recorded event the same way.
            if new.steps > old.steps:
                stale.append(replace(new, steps=new.steps - old.steps))
        elif old != new:
            return None
    return stale + list(now[len(at_checkpoint):])


def _json_safe(value: Any) -> Any:
    """Protocol stats as plain JSON (numpy scalars and arrays become numbers and lists)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class FederatedRun:
    def __init__(self, plan: Plan, run_dir: RunDirectory, *, progress: Progress | None = None) -> None:
        self.plan = plan
        self.cfg = plan.config
        self.run_dir = run_dir
        self.progress = Serialized(progress or _silent)
        self.device = resolve_device(self.cfg.run.device)
        self.workers = resolve_workers(self.cfg.run.workers, device=self.device)
        self.source = make_source(self.cfg)
        self.state: TrainingState | None = None
        self._ddp: DistributedPlan | None = None  # hybrid: the distributed DP-SGD plan
        self._client_level: ClientLevelPlan | None = None  # privacy.client_level

    # -- set-up -----------------------------------------------------------------------
    def _ledger(self, client_id: str) -> PrivacyLedger:
        p = self.cfg.privacy
        return PrivacyLedger(client_id=client_id, budget_epsilon=self._budget, delta=p.delta,
                             accountant=p.accountant)

    def _planned_budget(self, sizes: list[int]) -> tuple[float, dict[str, DPPlan]]:
        """The run's budget is its plan: each client's planned mechanisms are
        charged to a trial ledger, and the largest per-artefact epsilon they
        compose to becomes every ledger's budget. A step beyond the plan is refused."""
        cfg, strategy = self.cfg, self.cfg.federation.strategy
        plans: dict[str, DPPlan] = {}
        shared_on = cfg.privacy.dpsgd_shared and strategy in ("pfdm", "layer-split")
        personal_on = cfg.privacy.dpsgd_personal and strategy in ("pfdm", "local")
        budget = 0.0
        for cid, n in zip(self.plan.client_ids, sizes, strict=True):
            trial = PrivacyLedger(client_id=cid, budget_epsilon=1e12, delta=cfg.privacy.delta,
                                  accountant=cfg.privacy.accountant)
            if strategy == "pfdm" or cfg.federation.hybrid_forward:
                if adaptive_forward(cfg):
                    trial.charge(quantile_plan(cfg, self.plan).event(_members_id(cid)))
                trial.charge(self._planned_forward_event(cid))
                if cfg.privacy.labels == "randomized-response":
                    trial.charge(RandomizedResponseEvent(epsilon=cfg.privacy.label_epsilon,
                                                         num_classes=self.plan.dataset.num_classes))
            for artefact, on, steps in (("shared", shared_on, cfg.federation.local_steps),
                                        ("personal", personal_on, self._personal_steps())):
                if on:
                    dp = _dp_plan(cfg, n=n, steps_per_round=steps)
                    plans[f"{cid}/{artefact}"] = dp
                    trial.charge(DPSGDEvent(dp.noise_multiplier, dp.sample_rate,
                                            steps * cfg.federation.rounds, artefact,
                                            count_noise=dp.count_noise,
                                            input=_dpsgd_input(strategy, artefact)))
            if strategy == "hybrid":
                # hybrid_forward: the noise is calibrated for what the forward noise leaves.
                ddp = self._distributed_plan(sizes, prior_events=list(trial.events))
                trial.charge(skellam_event(ddp, survivors=ddp.skellam.min_survivors,
                                           steps=ddp.steps_per_round * cfg.federation.rounds))
            if cfg.privacy.client_level:
                trial.charge(self._client_level_plan(len(sizes)).event(rounds=cfg.federation.rounds))
            for artefact in ("shared", "personal"):
                if any(e.artefact == artefact for e in trial.events):
                    budget = max(budget, trial.peak_epsilon(artefact))
        # Nothing planned (no DP anywhere): the ledgers stay empty; any charge is refused.
        return (budget * (1 + 1e-9) if budget > 0 else cfg.privacy.target_epsilon), plans

    def _distributed_plan(self, sizes: list[int], prior_events=()) -> DistributedPlan:
        """The same for every client: their prior events differ only in data ids."""
        if self._ddp is None:
            dim = sum(p.numel() for p in self._strategy.global_model.parameters() if p.requires_grad)
            self._ddp = plan_distributed(self.cfg, sizes=sizes, dim=dim, prior_events=prior_events)
        return self._ddp

    def _client_level_plan(self, num_clients: int) -> ClientLevelPlan:
        """Client-level DP's plan: the noise for privacy.client_epsilon over all rounds."""
        if self._client_level is None:
            p, f = self.cfg.privacy, self.cfg.federation
            z = p.client_noise_multiplier
            self._client_level = plan_client_level(
                mechanism=p.client_noise, clip=p.client_clip, target_epsilon=None if z > 0 else p.client_epsilon,
                noise_multiplier=z if z > 0 else None, sample_rate=f.client_fraction, num_clients=num_clients,
                rounds=f.rounds, delta=p.delta, dim=int(self._strategy.global_vector().size),
                accountant=p.accountant, min_survivors=p.ddp_min_survivors)
        return self._client_level

    def _personal_steps(self) -> int:
        steps = personal_steps_per_round(self.cfg)
        return steps + self.cfg.federation.local_steps if self.cfg.federation.strategy == "local" else steps

    def _planned_forward_event(self, client_id: str) -> ForwardNoiseEvent:
        """The event noise_once will charge for this client (the same sigma, C and t0)."""
        return ForwardNoiseEvent(sigma=forward_sigma(float(self.plan.schedule.abar[self.plan.t0])),
                                 clip_norm=self.cfg.privacy.clip_norm, t0=self.plan.t0,
                                 data_id=_members_id(client_id))

    def _choose_forward_clip(self) -> None:
        """Adaptive PFDM: C from a private quantile of the clients' image norms, t0
        for what remains of the budget. The counts are charged (and written) first."""
        cfg = self.cfg
        ids = [_members_id(cid) for cid in self.plan.client_ids]
        event = quantile_plan(cfg, self.plan).event
        ledgers = {}
        for cid, data_id in zip(self.plan.client_ids, ids, strict=True):
            ledger = PrivacyLedger(client_id=cid, budget_epsilon=cfg.privacy.target_epsilon,
                                   delta=cfg.privacy.delta, accountant=cfg.privacy.accountant)
            ledger.charge(event(data_id))
            ledgers[cid] = ledger.to_dict()
        atomic_write_json(self.run_dir.file("ledger.json"), ledgers)
        sources = [self.source.child(f"client/{cid}").child("clip-quantile") for cid in self.plan.client_ids]
        self.plan = choose_forward_clip(self.plan, sources, ids)
        self.cfg = self.plan.config
        self.progress("forward_clip", {"clip_norm": self.cfg.privacy.clip_norm, "t0": self.plan.t0})

    def setup(self, *, resume: bool) -> None:
        if not resume and adaptive_forward(self.cfg):
            self._choose_forward_clip()
        plan, cfg = self.plan, self.cfg
        strategy = build_strategy(plan)
        self._strategy = strategy
        init_gen = self.source.child("init").torch_generator()
        strategy.init_global(init_gen)
        if strategy.global_model is not None:
            strategy.global_model.to(self.device)
        public = bool(cfg.public.dataset)
        if public and not resume:  # on resume the checkpoint holds the pretrained models
            atomic_write_json(self.run_dir.file("public_pretraining.json"), pretrain_public(
                strategy.global_model, plan, source=self.source.child("public"), device=self.device))
            self.progress("public_pretrained", {"steps": cfg.public.steps})
        sizes = [len(c.member_indices) for c in plan.partition.clients]
        self._budget, dp_plans = self._planned_budget(sizes)
        clients = []
        for index, split in enumerate(plan.partition.clients):
            x = torch.from_numpy(plan.client_images(index, split.member_indices)).to(self.device)
            y = torch.from_numpy(plan.dataset.labels[split.member_indices]).to(self.device)
            client = Client(client_id=split.client_id, index=index, x=x, y=y,
                            ledger=self._ledger(split.client_id),
                            source=self.source.child(f"client/{split.client_id}"))
            strategy.init_client(client, init_gen)
            if client.model is not None:
                client.model.to(self.device)
                if public:  # every personal model starts from the public one
                    client.model.load_state_dict(strategy.global_model.state_dict())
                client.optimizer = torch.optim.Adam(client.model.parameters(), lr=cfg.training.lr)
            clients.append(client)
        if isinstance(strategy, Centralized):
            strategy.pool(clients)
        self.state = TrainingState(strategy=strategy, clients=clients,
                                   dp_shared=None, dp_personal=None)
        self._dp_plans = dp_plans
        if resume:
            self._restore()
        else:
            self._prepare_shared_data()
            self._write_ledgers()
            self._checkpoint()

    def _prepare_shared_data(self) -> None:
        """PFDM: clip and noise each client's images ONCE (ledger first); persist
        x~ so that a resume reuses it and never re-noises."""
        if not self.state.strategy.uses_noised_data:
            return
        tensors = {}
        for client in self.state.clients:
            if adaptive_forward(self.cfg):  # the counts that chose C (_choose_forward_clip)
                client.ledger.charge(quantile_plan(self.cfg, self.plan).event(_members_id(client.client_id)))
            x_tilde = noise_once(client.x.cpu().double(), clip_norm=self.cfg.privacy.clip_norm, t0=self.plan.t0,
                                 abar=self.plan.schedule.abar, source=client.source.child("forward-noise"),
                                 ledger=client.ledger, data_id=_members_id(client.client_id)).float()
            labels = client.y.cpu().numpy()
            if self.cfg.privacy.labels == "randomized-response":
                labels = randomized_response(labels, epsilon=self.cfg.privacy.label_epsilon,
                                             num_classes=self.plan.dataset.num_classes,
                                             source=client.source.child("label-rr"), ledger=client.ledger)
            client.x_shared = x_tilde.to(self.device)
            client.y_shared = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
            tensors[f"{client.client_id}.x_noised"] = x_tilde
            tensors[f"{client.client_id}.y_shared"] = client.y_shared.cpu()
        digest = save_tensors(self.run_dir.file("checkpoints", "noised-data.safetensors"), tensors)
        self._noised_sha256 = digest

    # -- persistence ------------------------------------------------------------------------
    def _write_ledgers(self) -> None:
        atomic_write_json(self.run_dir.file("ledger.json"),
                          {c.client_id: c.ledger.to_dict() for c in self.state.clients})

    def _modules(self) -> tuple[dict, dict]:
        s = self.state
        modules, optimizers = {}, {}
        if s.strategy.global_model is not None:
            modules["global"] = s.strategy.global_model
        if isinstance(s.strategy, Centralized | Hybrid):
            optimizers["global"] = s.strategy.optimizer
        for c in s.clients:
            if c.model is not None:
                modules[c.client_id] = c.model
                optimizers[c.client_id] = c.optimizer
        return modules, optimizers

    def _checkpoint(self) -> None:
        modules, optimizers = self._modules()
        path = self.run_dir.file("checkpoints", "state.safetensors")
        # Staged, committed by progress.json, then promoted (see resolve_committed):
        # a kill between any two of these leaves a state that matches its record.
        digest = save_round_state(staged_path(path), modules=modules, optimizers=optimizers,
                                  round_index=self.state.rounds_done)
        atomic_write_json(self.run_dir.file("checkpoints", "progress.json"), seal_progress({
            "rounds_done": self.state.rounds_done, "state_sha256": digest,
            # The sessions whose transcript lines precede this checkpoint: a resume
            # refuses a roster.json that no longer holds them (the transcript would
            # no longer verify).
            "roster_sha256": roster_digests(self.run_dir.file("roster.json")),
            "noised_sha256": getattr(self, "_noised_sha256", None), "round_logs": self.state.round_logs,
            # What each ledger held at this checkpoint: a resume refuses a ledger that
            # does not extend it (an edit that drops events would under-count).
            "ledger_events": {c.client_id: [e.to_dict() for e in c.ledger.events]
                              for c in self.state.clients},
            # Adaptive clipping state (derived from released, private values only).
            "update_clip": self.state.update_clip,
            "sample_clip": {c.client_id: c.sample_clip for c in self.state.clients if c.sample_clip},
        }))
        promote_staged(path)

    def _restore(self) -> None:
        progress = read_progress(self.run_dir.file("checkpoints", "progress.json"),
                                 rounds=self.cfg.federation.rounds)
        check_rosters(self.run_dir.file("roster.json"), progress["roster_sha256"])
        ledgers = read_json(self.run_dir.file("ledger.json"))
        for client in self.state.clients:
            if client.client_id not in ledgers:
                raise CheckpointError(f"ledger.json has no ledger for {client.client_id}")
            client.ledger = PrivacyLedger.from_dict(ledgers[client.client_id])
        self._settle_stale_reservations(progress)
        modules, optimizers = self._modules()
        state_path = resolve_committed(self.run_dir.file("checkpoints", "state.safetensors"),
                                       progress["state_sha256"], roll_forward=True)
        load_round_state(state_path, modules=modules, optimizers=optimizers,
                         expected_sha256=progress["state_sha256"])
        if self.state.strategy.uses_noised_data:
            self._noised_sha256 = progress["noised_sha256"]
            tensors = load_tensors(self.run_dir.file("checkpoints", "noised-data.safetensors"),
                                   expected_sha256=self._noised_sha256)
            for client in self.state.clients:
                if _members_id(client.client_id) not in client.ledger.noised_data_ids():
                    raise CheckpointError(f"ledger of {client.client_id} records no forward noise")
                client.x_shared = tensors[f"{client.client_id}.x_noised"].to(self.device)
                client.y_shared = tensors[f"{client.client_id}.y_shared"].to(self.device)
        self.state.rounds_done = int(progress["rounds_done"])
        self.state.round_logs = list(progress["round_logs"])
        self.state.update_clip = progress.get("update_clip")
        sample_clip = progress.get("sample_clip") or {}
        for client in self.state.clients:
            client.sample_clip = dict(sample_clip.get(client.client_id, {}))

    def _settle_stale_reservations(self, progress: dict) -> None:
        """After a crash mid-round the ledger holds the write-ahead charges of a round
        the resume redoes. Personal DP-SGD charges are dropped: the personal model
        goes back to the checkpoint and nothing it computed was released. Every
        other charge stays (a shared update may have left the client), so the
        redone round is charged again: the budget grows by exactly that and the
        run says so. A ledger holding less than the checkpoint recorded is refused."""
        recorded = progress.get("ledger_events")
        if recorded is None:  # a checkpoint written before this record existed
            return
        grew = []
        for client in self.state.clients:
            try:
                at_checkpoint = [event_from_dict(e) for e in recorded[client.client_id]]
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"progress.json has no usable ledger record for "
                                      f"{client.client_id}") from None
            stale = _stale_events(at_checkpoint, client.ledger.events)
            if stale is None:
                raise CheckpointError(
                    f"ledger.json of {client.client_id} holds less than the ledger recorded at "
                    "the last checkpoint (edited or truncated): refusing to resume")
            if not stale:
                continue
            kept = [e for e in stale if not (isinstance(e, DPSGDEvent) and e.artefact == "personal")]
            ledger = self._ledger(client.client_id)
            ledger.budget_epsilon = 1e12
            for event in (*at_checkpoint, *kept):
                ledger.charge(event)
            budget = client.ledger.budget_epsilon
            if kept:
                budget = max(budget, self._remaining_plan_budget(ledger, int(progress["rounds_done"])))
                grew.append((client.client_id, client.ledger.budget_epsilon, budget))
            ledger.budget_epsilon = budget
            client.ledger = ledger
        for cid, before, after in grew:
            self.progress("ledger_recharge", {"client": cid, "budget_before": before,
                                              "budget_after": after})
        self._write_ledgers()

    def _remaining_plan_budget(self, ledger: PrivacyLedger, rounds_done: int) -> float:
        """The largest per-artefact epsilon of `ledger` plus the plan's rounds still to run."""
        trial = PrivacyLedger(client_id=ledger.client_id, budget_epsilon=1e12,
                              delta=ledger.delta, accountant=ledger.accountant,
                              events=ledger.events)
        remaining = self.cfg.federation.rounds - rounds_done
        for key, dp in self._dp_plans.items():
            cid, artefact = key.split("/")
            if cid == ledger.client_id and remaining > 0:
                steps = (self.cfg.federation.local_steps if artefact == "shared"
                         else self._personal_steps())
                trial.charge(DPSGDEvent(dp.noise_multiplier, dp.sample_rate,
                                        steps * remaining, artefact, count_noise=dp.count_noise,
                                        input=_dpsgd_input(self.cfg.federation.strategy, artefact)))
        if self._client_level is not None and remaining > 0:
            trial.charge(self._client_level.event(rounds=remaining))
        if self.state.strategy.distributed and remaining > 0:
            trial.charge(skellam_event(self._ddp, survivors=self._ddp.skellam.min_survivors,
                                       steps=self._ddp.steps_per_round * remaining))
        return max(self._budget, max(trial.peak_epsilon(a) for a in {e.artefact for e in trial.events}
                                     ) * (1 + 1e-9))

    # -- the round loop -----------------------------------------------------------------------
    def _select(self, round_index: int) -> list[Client]:
        clients = self.state.clients
        if self._client_level is not None and self._client_level.sample_rate < 1.0:
            # Poisson sampling at client_fraction: what the client-level accountant assumes.
            keep = self.source.child(f"client-sampling/round-{round_index}").bernoulli(
                self._client_level.sample_rate, len(clients))
            return [c for c, k in zip(clients, keep, strict=True) if k]
        k = max(1, round(self.cfg.federation.client_fraction * len(clients)))
        if k == len(clients):
            return list(clients)
        order = self.source.child(f"client-sampling/round-{round_index}").numpy_generator().permutation(len(clients))
        return [clients[i] for i in sorted(order[:k])]

    def _dropouts(self, round_index: int, protocol, selected: list[str]) -> dict[str, str]:
        """Simulated dropouts: which clients disappear, and before which stage."""
        rate = self.cfg.federation.dropout_rate
        if rate <= 0:
            return {}
        rng = self.source.child(f"dropouts/round-{round_index}").numpy_generator()
        count = int(round(rate * len(selected)))
        dropped = rng.permutation(len(selected))[:count]
        client_stages = [spec.name for spec in protocol.stages if spec.sender == "client"]
        stage = self.cfg.federation.dropout_stage
        if stage and stage not in {spec.name for spec in protocol.stages}:
            from securediff.errors import ConfigError

            raise ConfigError(f"federation.dropout_stage = {stage!r} is not a stage of "
                              f"{protocol.name}: {', '.join(s.name for s in protocol.stages)}")
        return {selected[i]: stage or client_stages[int(rng.integers(len(client_stages)))] for i in dropped}

    def _clip_update(self, update: np.ndarray) -> np.ndarray:
        bound = self.cfg.federation.update_clip
        norm = float(np.linalg.norm(update))
        if bound > 0 and norm > bound:
            return update * (bound / norm)
        return update

    def train(self) -> None:
        s, cfg = self.state, self.cfg
        strategy = s.strategy
        self.progress("run_start", {"clients": len(s.clients), "rounds": cfg.federation.rounds,
                                    "rounds_done": s.rounds_done})
        identities = Identities.generate([c.client_id for c in s.clients])
        params = dict(cfg.protocol)
        # Distributed DP: one protocol round per step, and the plan fixes the ring and the floor.
        per_round = self._ddp.steps_per_round if strategy.distributed else 1
        if strategy.distributed:
            params.update(value_bits=self._ddp.skellam.secagg_value_bits,
                          min_contributors=self._ddp.skellam.min_survivors)
        if self._client_level is not None:
            params.update(self._client_level.protocol_params())
        protocol = make_protocol(cfg.federation.protocol, **params).bind(identities)
        if hasattr(protocol, "with_answers"):
            # Each simulated client claims a round index before it reveals a share, in a
            # file that outlives the process: a resumed session cannot be answered twice.
            protocol = protocol.with_answers(FileAnswerLog(self.run_dir.file("answers.jsonl")))
        self._append_roster(identities)
        transcript_path = self.run_dir.file("transcript.jsonl")
        # A resumed session moves on to protocol round indices no earlier session used
        # (a round that was unmasked before the crash must never be unmasked again).
        self._index_offset = max(0, last_round_index(transcript_path) + 1
                                 - s.rounds_done * per_round) if strategy.federated else 0
        transcript = TranscriptWriter.open(
            transcript_path, identities=identities, protocol=protocol,
            planned_rounds=(s.rounds_done * per_round + self._index_offset,
                            cfg.federation.rounds * per_round + self._index_offset)
            if s.rounds_done < cfg.federation.rounds else None,
        ) if strategy.federated else None
        try:
            for r in range(s.rounds_done, cfg.federation.rounds):
                started = time.perf_counter()
                self.progress("round_start", {"round": r, "rounds": cfg.federation.rounds})
                log = self._round(r, protocol, identities, transcript)
                log.seconds = time.perf_counter() - started
                s.round_logs.append(vars(log))
                s.rounds_done = r + 1
                self._write_ledgers()
                self._checkpoint()
                self.progress("round_end", {"round": r, "rounds": cfg.federation.rounds, "log": vars(log)})
        finally:
            if transcript is not None:
                transcript.close()

    def _round(self, r: int, protocol, identities, transcript) -> RoundLog:
        s = self.state
        strategy = s.strategy
        if strategy.distributed:
            return self._distributed_round(r, protocol, identities, transcript)
        selected = self._select(r) if strategy.federated else []
        inputs, norms = {}, {}
        adaptive = self.cfg.privacy.clipping == "adaptive"
        clip = s.update_clip
        client_level = ClientLevelRound(self._client_level) if self._client_level is not None else None
        if client_level is not None and strategy.federated:
            # Write-ahead, every client (sampled or not: sampling is part of the mechanism),
            # at the noise floor; a round with more Skellam shares keeps the floor's charge.
            for client in s.clients:
                client.ledger.charge(self._client_level.event())

        def shared_update(client: Client) -> np.ndarray:
            self.progress("client_start", {"round": r, "client": client.client_id, "phase": "shared"})
            return strategy.local_update(client, r, self._dp_plans.get(f"{client.client_id}/shared"))

        updates = map_clients(shared_update, selected, workers=self.workers)
        for client, update in zip(selected, updates, strict=True):
            if client_level is not None:
                inputs[client.client_id] = client_level.client_input(
                    update, noise_source=client.private_stream("client-level-share", r))
                norms[client.client_id] = min(float(np.linalg.norm(update)), self._client_level.clip)
                continue
            # Adaptive: the bits ride behind the update through the same protocol.
            update, bits = clip_with_bits(update, clip) if adaptive else (self._clip_update(update), [])
            norms[client.client_id] = float(np.linalg.norm(update))
            inputs[client.client_id] = ClientInput(vector=np.concatenate([update, bits]).astype(np.float32),
                                                   weight=float(client.num_members))
        fraction = None
        # Write-ahead: the DP-SGD steps charged above are on disk before any update leaves.
        self._write_ledgers()
        survivors: list[str] = []
        contributors: list[str] = []
        bytes_up = bytes_down = 0
        stats: dict = {}
        if inputs:
            try:
                result = run_round(
                    protocol, round_index=r + self._index_offset, inputs=inputs,
                    identities=identities,
                    transcript=transcript, dropouts=self._dropouts(r, protocol, list(inputs)),
                    random_bytes=self.source.child(f"protocol/round-{r}").random_bytes)
            except ProtocolAbort as exc:
                # As in Bonawitz et al.: an aborted round releases nothing and the
                # shared model stays as it was; the next round starts afresh.
                result, stats = None, {"aborted": str(exc)}
                self.progress("round_aborted", {"round": r, "reason": str(exc)})
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
                                                   noise_source=self.source.child(f"client-level-noise/round-{r}"))
                    mean = mean_update = client_level.step(noisy)
                else:
                    mean = np.asarray(result.weighted_sum, dtype=np.float64) / result.total_weight
                    mean_update = mean[:mean.size - bit_count(clip)] if adaptive else mean
                strategy.apply_global(strategy.global_vector() + mean_update)
                if adaptive:
                    bits_mean = np.clip(mean[mean_update.size:], 0.0, 1.0)  # quantization error
                    fraction = float(bits_mean[0]) if clip is not None else None
                    s.update_clip = next_update_clip(clip, bits_mean, target_quantile=self.cfg.privacy.clip_quantile,
                                                     lr=self.cfg.privacy.clip_lr)
                survivors, contributors = list(result.survivors), list(result.contributors)
                bytes_up, bytes_down = int(result.bytes_up), int(result.bytes_down)
                stats = _json_safe(result.stats | {"check_against_plain": check})
            if hasattr(strategy, "finish_round"):
                strategy.finish_round(s.clients)
        elif client_level is not None and strategy.federated:
            # Nobody sampled: the release is still the noise (the accountant's mechanism
            # releases a noisy sum every round; a noise-free "no change" would not be it).
            zero = np.zeros_like(strategy.global_vector())
            noisy = client_level.noisy_sum(zero, contributors=0,
                                           noise_source=self.source.child(f"client-level-noise/round-{r}"))
            strategy.apply_global(strategy.global_vector() + client_level.step(noisy))
            if hasattr(strategy, "finish_round"):
                strategy.finish_round(s.clients)
        if isinstance(strategy, Centralized):
            strategy.train_round(self.source.child(f"centralized/round-{r}").torch_generator())

        def personal(client: Client) -> None:
            self.progress("client_start", {"round": r, "client": client.client_id, "phase": "personal"})
            strategy.personal_train(client, r, self._dp_plans.get(f"{client.client_id}/personal"))

        map_clients(personal, [c for c in s.clients if c.model is not None], workers=self.workers)
        return RoundLog(round=r, clients=[c.client_id for c in selected], survivors=survivors,
                        contributors=contributors, update_norms=norms, bytes_up=bytes_up,
                        bytes_down=bytes_down, seconds=0.0, protocol_stats=stats,
                        update_clip=clip if adaptive else None, unclipped_fraction=fraction)

    def _distributed_round(self, r: int, protocol, identities, transcript) -> RoundLog:
        """`steps_per_round` distributed DP-SGD steps, one protocol round each.

        Write-ahead: every client's ledger is charged the round's steps at the
        noise floor (min_survivors shares) before any share leaves. After the
        round the reservation is replaced by what reached each aggregate (the
        contributors' shares, never fewer than the floor: secagg refuses to
        unmask below it); an aborted step keeps its floor charge.
        """
        s, cfg, plan = self.state, self.cfg, self._ddp
        strategy = s.strategy
        steps = plan.steps_per_round
        reservation = skellam_event(plan, survivors=plan.skellam.min_survivors, steps=steps)
        before = {c.client_id: c.ledger.events for c in s.clients}
        for client in s.clients:
            client.ledger.charge(reservation)
        self._write_ledgers()
        shared = [p for p in strategy.global_model.parameters() if p.requires_grad]
        workers = {c.client_id: ClientGradients(strategy.global_model) for c in s.clients}
        contributors_per_step: list[int] = []
        survivors: set[str] = set()
        bytes_up = bytes_down = 0
        aborted: list[str] = []
        try:
            for step in range(steps):
                index = r * steps + step
                for grads in workers.values():
                    grads.load(shared)

                def share(client: Client, index: int = index) -> np.ndarray:
                    stream = client.private_stream("ddp", index)
                    noised = (NoisedPart(client.x_shared, client.y_shared, self.plan.t0,
                                         sampling_source=stream.child("poisson-noised"),
                                         generator=client.generator("ddp-noised-loss", index))
                              if strategy.uses_noised_data else None)
                    return client_share(
                        workers[client.client_id], plan, x=client.x, y=client.y,
                        clip=cfg.privacy.max_grad_norm, multiplicity=cfg.privacy.noise_multiplicity,
                        schedule=self.plan.schedule, null_label=self.plan.spec.null_label,
                        label_dropout=cfg.diffusion.label_dropout, sampling_source=stream.child("poisson"),
                        noise_source=stream.child("skellam"), generator=client.generator("ddp-loss", index),
                        noised=noised)

                shares = map_clients(share, s.clients, workers=self.workers)
                inputs = {c.client_id: ClientInput(vector=v, weight=1.0)
                          for c, v in zip(s.clients, shares, strict=True)}
                try:
                    result = run_round(
                        protocol, round_index=index + self._index_offset, inputs=inputs,
                        identities=identities,
                        transcript=transcript, dropouts=self._dropouts(index, protocol, list(inputs)),
                        random_bytes=self.source.child(f"protocol/round-{index}").random_bytes)
                except ProtocolAbort as exc:
                    aborted.append(str(exc))
                    self.progress("round_aborted", {"round": index, "reason": str(exc)})
                    continue
                check = check_against_plain(protocol, inputs, result)
                if not check["ok"]:
                    raise ProtocolError(f"step {index}: the {protocol.name} aggregate differs from the "
                                        f"plain sum by {check['max_abs_error']:.3g}")
                total = np.rint(np.asarray(result.weighted_sum, dtype=np.float64)).astype(np.int64)
                noisy_sum = decode_sum(total, plan.skellam)
                apply_noisy_sum(strategy.global_model, strategy.optimizer, noisy_sum, plan.expected_batch)
                contributors_per_step.append(len(result.contributors))
                survivors.update(result.survivors)
                bytes_up += int(result.bytes_up)
                bytes_down += int(result.bytes_down)
        finally:
            for grads in workers.values():
                grads.close()
        self._settle_distributed(before, contributors_per_step, aborted=len(aborted))

        def personal(client: Client) -> None:
            self.progress("client_start", {"round": r, "client": client.client_id, "phase": "personal"})
            strategy.personal_train(client, r, None)

        map_clients(personal, s.clients, workers=self.workers)
        stats = {"steps": steps, "aborted_steps": len(aborted), "abort_reasons": sorted(set(aborted)),
                 "contributors_per_step": contributors_per_step,
                 "noise_multiplier_at_floor": plan.skellam.noise_multiplier,
                 "wrap_probability": plan.skellam.wrap_probability}
        return RoundLog(round=r, clients=[c.client_id for c in s.clients], survivors=sorted(survivors),
                        contributors=sorted(survivors), update_norms={}, bytes_up=bytes_up,
                        bytes_down=bytes_down, seconds=0.0, protocol_stats=stats)

    def _settle_distributed(self, before: dict[str, tuple], contributors_per_step: list[int], *,
                            aborted: int) -> None:
        """Replace each ledger's floor reservation by the noise that actually reached
        each released sum (more contributors, more noise, a smaller epsilon).
        `before`: each ledger's events before the reservation."""
        counts: dict[int, int] = {}
        for n in contributors_per_step:
            counts[n] = counts.get(n, 0) + 1
        realized = [skellam_event(self._ddp, survivors=n, steps=k) for n, k in sorted(counts.items())]
        if aborted:
            realized.append(skellam_event(self._ddp, survivors=self._ddp.skellam.min_survivors, steps=aborted))
        for client in self.state.clients:
            ledger = PrivacyLedger(client_id=client.client_id, budget_epsilon=client.ledger.budget_epsilon,
                                   delta=client.ledger.delta, accountant=client.ledger.accountant,
                                   events=before[client.client_id])
            for event in realized:  # each costs at most the reservation it replaces
                ledger.charge(event)
            client.ledger = ledger

    def _append_roster(self, identities: Identities) -> None:
        # Each session (a start or a resume) pins its own roster; earlier ones stay.
        save_roster(self.run_dir.file("roster.json"), identities.roster(), append=True)


