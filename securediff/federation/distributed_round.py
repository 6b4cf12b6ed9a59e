"""One round of the hybrid strategy: `steps_per_round` distributed DP-SGD steps,
one protocol round each (each client's clipped gradient sum plus its share of
Skellam noise, aggregated blindly), then each client's personal training.

Write-ahead: every client's ledger is charged the round's steps at the noise
floor (min_survivors shares) before any share leaves. After the round the
reservation is replaced by what reached each aggregate (the contributors'
shares, never fewer than the floor: secagg refuses to unmask below it); an
aborted step keeps its floor charge."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from protocols import ClientInput, check_against_plain, run_round
from protocols.errors import ProtocolAbort, ProtocolError
from securediff.federation.clients import Client
from securediff.federation.distributed import (
    ClientGradients,
    DistributedPlan,
    NoisedPart,
    apply_noisy_sum,
    client_share,
    decode_sum,
    skellam_event,
)
from securediff.federation.parallel import map_clients
from securediff.federation.rounds import RoundLog, simulated_dropouts
from securediff.privacy.ledger import PrivacyLedger

if TYPE_CHECKING:
    from securediff.federation.runner import FederatedRun


def distributed_round(run: FederatedRun, r: int, protocol, identities, transcript) -> RoundLog:
    s, cfg, plan = run.state, run.cfg, run.budget.distributed
    strategy = s.strategy
    steps = plan.steps_per_round
    reservation = skellam_event(plan, survivors=plan.skellam.min_survivors, steps=steps)
    before = {c.client_id: c.ledger.events for c in s.clients}
    for client in s.clients:
        client.ledger.charge(reservation)
    run.write_ledgers()
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
                noised = (NoisedPart(client.x_shared, client.y_shared, run.setup.t0,
                                     sampling_source=stream.child("poisson-noised"),
                                     generator=client.generator("ddp-noised-loss", index))
                          if strategy.uses_noised_data else None)
                return client_share(
                    workers[client.client_id], plan, x=client.x, y=client.y,
                    clip=cfg.privacy.max_grad_norm, multiplicity=cfg.privacy.noise_multiplicity,
                    schedule=run.setup.schedule, null_label=run.setup.spec.null_label,
                    label_dropout=cfg.diffusion.label_dropout, sampling_source=stream.child("poisson"),
                    noise_source=stream.child("skellam"), generator=client.generator("ddp-loss", index),
                    noised=noised)

            shares = map_clients(share, s.clients, workers=run.workers)
            inputs = {c.client_id: ClientInput(vector=v, weight=1.0)
                      for c, v in zip(s.clients, shares, strict=True)}
            try:
                result = run_round(
                    protocol, round_index=index + run.index_offset, inputs=inputs, identities=identities,
                    transcript=transcript,
                    dropouts=simulated_dropouts(cfg, run.source, index, protocol, list(inputs)),
                    random_bytes=run.source.child(f"protocol/round-{index}").random_bytes)
            except ProtocolAbort as exc:
                aborted.append(str(exc))
                run.progress("round_aborted", {"round": index, "reason": str(exc)})
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
    _settle(plan, s.clients, before, contributors_per_step, aborted=len(aborted))

    def personal(client: Client) -> None:
        run.progress("client_start", {"round": r, "client": client.client_id, "phase": "personal"})
        strategy.personal_train(client, r, None)

    map_clients(personal, s.clients, workers=run.workers)
    stats = {"steps": steps, "aborted_steps": len(aborted), "abort_reasons": sorted(set(aborted)),
             "contributors_per_step": contributors_per_step,
             "noise_multiplier_at_floor": plan.skellam.noise_multiplier,
             "wrap_probability": plan.skellam.wrap_probability}
    return RoundLog(round=r, clients=[c.client_id for c in s.clients], survivors=sorted(survivors),
                    contributors=sorted(survivors), update_norms={}, bytes_up=bytes_up,
                    bytes_down=bytes_down, seconds=0.0, protocol_stats=stats)


def _settle(plan: DistributedPlan, clients: list[Client], before: dict[str, tuple],
            contributors_per_step: list[int], *, aborted: int) -> None:
    """Replace each ledger's floor reservation by the noise that actually reached
    each released sum (more contributors, more noise, a smaller epsilon).
    `before`: each ledger's events before the reservation."""
    counts: dict[int, int] = {}
    for n in contributors_per_step:
        counts[n] = counts.get(n, 0) + 1
    realized = [skellam_event(plan, survivors=n, steps=k) for n, k in sorted(counts.items())]
    if aborted:
        realized.append(skellam_event(plan, survivors=plan.skellam.min_survivors, steps=aborted))
    for client in clients:
        ledger = PrivacyLedger(client_id=client.client_id, budget_epsilon=client.ledger.budget_epsilon,
                               delta=client.ledger.delta, accountant=client.ledger.accountant,
                               events=before[client.client_id])
        for event in realized:  # each costs at most the reservation it replaces
            ledger.charge(event)
        client.ledger = ledger
