"""The run's budget is its plan: every mechanism the run will use is charged to
a trial ledger per client before training starts, and the largest per-artefact
epsilon they compose to becomes every ledger's budget. A step beyond the plan is
refused by the ledger; a redone round after a crash grows the budget by exactly
what it charges again (`remaining_plan_budget`). Each client's own plan is
client_runtime's, which a Flower node plans with too."""

from __future__ import annotations

from dataclasses import dataclass

from securediff.config import Config
from securediff.federation.client_level import ClientLevelPlan, plan_client_level
from securediff.federation.client_runtime import (
    UNCAPPED,
    dpsgd_events,
    dpsgd_params_by_artefact,
    planned_epsilon,
    planned_ledger,
)
from securediff.federation.distributed import DistributedPlan, plan_distributed, skellam_event
from securediff.federation.setup import RunSetup
from securediff.federation.strategies import DPSGDParams, Strategy
from securediff.privacy.ledger import MechanismEvent, PrivacyLedger


@dataclass(frozen=True)
class RunBudget:
    epsilon: float  # every ledger's budget
    dpsgd_params: dict[str, DPSGDParams]  # "client/artefact" -> its DP-SGD parameters
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


def plan_budget(setup: RunSetup, strategy: Strategy, *, release: MechanismEvent | None = None) -> RunBudget:
    """Each client's planned mechanisms charged to a trial ledger; the largest
    per-artefact epsilon they compose to is the budget. `release`: the event of a
    statistics release every client takes part in at its noise floor, if planned."""
    cfg = setup.config
    sizes = [len(c.member_indices) for c in setup.partition.clients]
    params: dict[str, DPSGDParams] = {}
    distributed: DistributedPlan | None = None
    client_level: ClientLevelPlan | None = None
    budget = 0.0
    for cid, n in zip(setup.client_ids, sizes, strict=True):
        client_params = dpsgd_params_by_artefact(cfg, members=n)
        params.update({f"{cid}/{artefact}": dp for artefact, dp in client_params.items()})
        trial = planned_ledger(setup, cid, client_params, rounds_left=cfg.federation.rounds)
        if strategy.distributed:
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
        if release is not None:
            trial.charge(release)
        budget = max(budget, planned_epsilon(trial))
    # Nothing planned (no DP anywhere): the ledgers stay empty; any charge is refused.
    epsilon = budget * (1 + 1e-9) if budget > 0 else cfg.privacy.target_epsilon
    return RunBudget(epsilon=epsilon, dpsgd_params=params, distributed=distributed, client_level=client_level)


def remaining_plan_budget(budget: RunBudget, cfg: Config, ledger: PrivacyLedger, *,
                          rounds_done: int, distributed: bool) -> float:
    """The largest per-artefact epsilon of `ledger` plus the plan's rounds still to run."""
    trial = PrivacyLedger(client_id=ledger.client_id, budget_epsilon=UNCAPPED,
                          delta=ledger.delta, accountant=ledger.accountant, events=ledger.events)
    remaining = cfg.federation.rounds - rounds_done
    own = {key.split("/")[1]: dp for key, dp in budget.dpsgd_params.items()
           if key.split("/")[0] == ledger.client_id}
    for event in dpsgd_events(cfg, own, rounds=remaining):
        trial.charge(event)
    if budget.client_level is not None and remaining > 0:
        trial.charge(budget.client_level.event(rounds=remaining))
    if distributed and remaining > 0:
        ddp = budget.distributed
        trial.charge(skellam_event(ddp, survivors=ddp.skellam.min_survivors,
                                   steps=ddp.steps_per_round * remaining))
    return max(budget.epsilon, planned_epsilon(trial) * (1 + 1e-9))
