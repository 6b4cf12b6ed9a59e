"""A resume's reconciliation of the ledgers with the last checkpoint.

After a crash mid-round the ledgers hold the write-ahead charges of a round the
resume redoes. Personal DP-SGD charges are dropped: the personal model goes back
to the checkpoint and nothing it computed was released. Every other charge stays
(a shared update may have left the client), so the redone round is charged
again: the budget grows by exactly that and the run says so. A ledger holding
less than the checkpoint recorded is refused."""

from __future__ import annotations

from dataclasses import replace

from securediff.config import Config
from securediff.errors import CheckpointError
from securediff.federation.budget import UNCAPPED, RunBudget, remaining_plan_budget
from securediff.federation.clients import Client
from securediff.privacy.client_level import ClientLevelEvent
from securediff.privacy.ledger import DPSGDEvent, event_from_dict


def stale_events(at_checkpoint, now) -> list | None:
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


def settle_stale_charges(clients: list[Client], progress: dict, *, budget: RunBudget, cfg: Config,
                         distributed: bool) -> list[tuple[str, float, float]] | None:
    """Rebuild each client's ledger as the checkpoint's plus the kept stale charges.
    Returns (client, budget before, budget after) for every budget that grew, or
    None (ledgers untouched) for a checkpoint written before ledgers were recorded."""
    recorded = progress.get("ledger_events")
    if recorded is None:
        return None
    grew = []
    for client in clients:
        try:
            at_checkpoint = [event_from_dict(e) for e in recorded[client.client_id]]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"progress.json has no usable ledger record for "
                                  f"{client.client_id}") from None
        stale = stale_events(at_checkpoint, client.ledger.events)
        if stale is None:
            raise CheckpointError(
                f"ledger.json of {client.client_id} holds less than the ledger recorded at "
                "the last checkpoint (edited or truncated): refusing to resume")
        if not stale:
            continue
        kept = [e for e in stale if not (isinstance(e, DPSGDEvent) and e.artefact == "personal")]
        ledger = budget.ledger(cfg, client.client_id)
        ledger.budget_epsilon = UNCAPPED
        for event in (*at_checkpoint, *kept):
            ledger.charge(event)
        cap = client.ledger.budget_epsilon
        if kept:
            cap = max(cap, remaining_plan_budget(budget, cfg, ledger, rounds_done=int(progress["rounds_done"]),
                                                 distributed=distributed))
            grew.append((client.client_id, client.ledger.budget_epsilon, cap))
        ledger.budget_epsilon = cap
        client.ledger = ledger
    return grew
