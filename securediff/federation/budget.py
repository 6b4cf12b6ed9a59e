"""The run's budget is its plan: every mechanism the run will use is charged to
a trial ledger per client before training starts, and the largest per-artefact
epsilon they compose to becomes every ledger's budget. A step beyond the plan is
refused by the ledger; a redone round after a crash grows the budget by exactly
what it charges again (`remaining_plan_budget`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from securediff.config import Config
from securediff.federation.client_level import ClientLevelPlan, plan_client_level
from securediff.federation.client_runtime import members_id
from securediff.federation.clipping import adaptive_forward, quantile_plan
from securediff.federation.distributed import DistributedPlan, plan_distributed, skellam_event
from securediff.federation.setup import Plan
from securediff.federation.strategies import DPPlan, Strategy
from securediff.privacy.accountants import calibrate_noise_multiplier
from securediff.privacy.adaptive import count_noise_for
from securediff.privacy.forward import forward_sigma
from securediff.privacy.ledger import (
    DPSGDEvent,
    ForwardNoiseEvent,
    PrivacyLedger,
    RandomizedResponseEvent,
)

# A trial ledger charges the whole plan; its own cap must never be what refuses.
UNCAPPED = 1e12


def personal_steps_per_round(config: Config) -> int:
    return max(0, math.ceil(config.training.personal_steps / config.federation.rounds))


def personal_steps(config: Config) -> int:
    """Personal DP-SGD steps a round charges ("local" trains only what it keeps)."""
    steps = personal_steps_per_round(config)
    return steps + config.federation.local_steps if config.federation.strategy == "local" else steps


def dp_plan(cfg: Config, *, n: int, steps_per_round: int) -> DPPlan:
    q = min(1.0, cfg.training.batch_size / n)
    total = steps_per_round * cfg.federation.rounds
    sigma = calibrate_noise_multiplier(target_epsilon=cfg.privacy.dpsgd_epsilon, sample_rate=q,
                                       steps=total, delta=cfg.privacy.delta, accountant=cfg.privacy.accountant)
    # Adaptive per-sample clipping spends part of the same multiplier on the unclipped count.
    count = (count_noise_for(noise_multiplier=sigma, expected_batch_size=q * n)
             if cfg.privacy.clipping == "adaptive" else None)
    return DPPlan(noise_multiplier=sigma, sample_rate=q, steps_per_round=steps_per_round,
                  count_noise=count)


def dpsgd_input(strategy: str, artefact: str) -> str:
    """What a planned DP-SGD event trains on (DPSGDEvent.input): PFDM's shared model x~."""
    return "noised" if strategy == "pfdm" and artefact == "shared" else "raw"


def planned_forward_event(plan: Plan, client_id: str) -> ForwardNoiseEvent:
    """The event noise_once will charge for this client (the same sigma, C and t0)."""
    return ForwardNoiseEvent(sigma=forward_sigma(float(plan.schedule.abar[plan.t0])),
                             clip_norm=plan.config.privacy.clip_norm, t0=plan.t0,
                             data_id=members_id(client_id))


@dataclass(frozen=True)
class RunBudget:
    epsilon: float  # every ledger's budget
    dp_plans: dict[str, DPPlan]  # "client/artefact" -> its DP-SGD plan
    distributed: DistributedPlan | None  # hybrid: the distributed DP-SGD plan
    client_level: ClientLevelPlan | None  # privacy.client_level

    def ledger(self, cfg: Config, client_id: str) -> PrivacyLedger:
        p = cfg.privacy
        return PrivacyLedger(client_id=client_id, budget_epsilon=self.epsilon, delta=p.delta,
                             accountant=p.accountant)


def _client_level_plan(cfg: Config, *, num_clients: int, dim: int) -> ClientLevelPlan:
    """Client-level DP's plan: the noise for privacy.client_epsilon over all rounds."""
    p, f = cfg.privacy, cfg.federation
    z = p.client_noise_multiplier
    return plan_client_level(
        mechanism=p.client_noise, clip=p.client_clip, target_epsilon=None if z > 0 else p.client_epsilon,
        noise_multiplier=z if z > 0 else None, sample_rate=f.client_fraction, num_clients=num_clients,
        rounds=f.rounds, delta=p.delta, dim=dim, accountant=p.accountant, min_survivors=p.ddp_min_survivors)


def plan_budget(plan: Plan, strategy: Strategy) -> RunBudget:
    """Each client's planned mechanisms charged to a trial ledger; the largest
    per-artefact epsilon they compose to is the budget."""
    cfg, name = plan.config, plan.config.federation.strategy
    sizes = [len(c.member_indices) for c in plan.partition.clients]
    plans: dict[str, DPPlan] = {}
    distributed: DistributedPlan | None = None
    client_level: ClientLevelPlan | None = None
    shared_on = cfg.privacy.dpsgd_shared and name in ("pfdm", "layer-split")
    personal_on = cfg.privacy.dpsgd_personal and name in ("pfdm", "local")
    budget = 0.0
    for cid, n in zip(plan.client_ids, sizes, strict=True):
        trial = PrivacyLedger(client_id=cid, budget_epsilon=UNCAPPED, delta=cfg.privacy.delta,
                              accountant=cfg.privacy.accountant)
        if name == "pfdm" or cfg.federation.hybrid_forward:
            if adaptive_forward(cfg):
                trial.charge(quantile_plan(cfg, plan).event(members_id(cid)))
            trial.charge(planned_forward_event(plan, cid))
            if cfg.privacy.labels == "randomized-response":
                trial.charge(RandomizedResponseEvent(epsilon=cfg.privacy.label_epsilon,
                                                     num_classes=plan.dataset.num_classes))
        for artefact, on, steps in (("shared", shared_on, cfg.federation.local_steps),
                                    ("personal", personal_on, personal_steps(cfg))):
            if on:
                dp = dp_plan(cfg, n=n, steps_per_round=steps)
                plans[f"{cid}/{artefact}"] = dp
                trial.charge(DPSGDEvent(dp.noise_multiplier, dp.sample_rate,
                                        steps * cfg.federation.rounds, artefact,
                                        count_noise=dp.count_noise, input=dpsgd_input(name, artefact)))
        if name == "hybrid":
            if distributed is None:
                # One plan for every client: their prior events differ only in data ids.
                # hybrid_forward: the noise is calibrated for what the forward noise leaves.
                dim = sum(p.numel() for p in strategy.global_model.parameters() if p.requires_grad)
                distributed = plan_distributed(cfg, sizes=sizes, dim=dim, prior_events=list(trial.events))
            trial.charge(skellam_event(distributed, survivors=distributed.skellam.min_survivors,
                                       steps=distributed.steps_per_round * cfg.federation.rounds))
        if cfg.privacy.client_level:
            if client_level is None:
                client_level = _client_level_plan(cfg, num_clients=len(sizes),
                                                  dim=int(strategy.global_vector().size))
            trial.charge(client_level.event(rounds=cfg.federation.rounds))
        for artefact in ("shared", "personal"):
            if any(e.artefact == artefact for e in trial.events):
                budget = max(budget, trial.peak_epsilon(artefact))
    # Nothing planned (no DP anywhere): the ledgers stay empty; any charge is refused.
    epsilon = budget * (1 + 1e-9) if budget > 0 else cfg.privacy.target_epsilon
    return RunBudget(epsilon=epsilon, dp_plans=plans, distributed=distributed, client_level=client_level)


def remaining_plan_budget(budget: RunBudget, cfg: Config, ledger: PrivacyLedger, *,
                          rounds_done: int, distributed: bool) -> float:
    """The largest per-artefact epsilon of `ledger` plus the plan's rounds still to run."""
    trial = PrivacyLedger(client_id=ledger.client_id, budget_epsilon=UNCAPPED,
                          delta=ledger.delta, accountant=ledger.accountant, events=ledger.events)
    remaining = cfg.federation.rounds - rounds_done
    for key, dp in budget.dp_plans.items():
        cid, artefact = key.split("/")
        if cid == ledger.client_id and remaining > 0:
            steps = cfg.federation.local_steps if artefact == "shared" else personal_steps(cfg)
            trial.charge(DPSGDEvent(dp.noise_multiplier, dp.sample_rate,
                                    steps * remaining, artefact, count_noise=dp.count_noise,
                                    input=dpsgd_input(cfg.federation.strategy, artefact)))
    if budget.client_level is not None and remaining > 0:
        trial.charge(budget.client_level.event(rounds=remaining))
    if distributed and remaining > 0:
        ddp = budget.distributed
        trial.charge(skellam_event(ddp, survivors=ddp.skellam.min_survivors,
                                   steps=ddp.steps_per_round * remaining))
    return max(budget.epsilon, max(trial.peak_epsilon(a) for a in {e.artefact for e in trial.events}
                                   ) * (1 + 1e-9))
