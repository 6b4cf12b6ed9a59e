"""What a run keeps on disk between rounds, and how a resume reads it back.

A checkpoint is three steps: the state is staged, `progress.json` commits it,
then the state is promoted (see storage.resolve_committed); a kill between any
two leaves a state that matches its record. Ledgers are written separately and
earlier (write-ahead), so a resume reconciles them (stale_charges)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from securediff.errors import CheckpointError
from securediff.federation.checkpoint import load_round_state, save_round_state
from securediff.federation.client_runtime import members_id
from securediff.federation.clients import Client
from securediff.federation.progress_file import (
    check_rosters,
    read_progress,
    roster_digests,
    seal_progress,
)
from securediff.privacy.ledger import PrivacyLedger
from securediff.storage import (
    RunDirectory,
    atomic_write_json,
    load_tensors,
    promote_staged,
    read_json,
    resolve_committed,
    staged_path,
)

if TYPE_CHECKING:
    from securediff.federation.runner import TrainingState


def write_ledgers(run_dir: RunDirectory, clients: list[Client]) -> None:
    atomic_write_json(run_dir.file("ledger.json"), {c.client_id: c.ledger.to_dict() for c in clients})


def _modules(state: TrainingState) -> tuple[dict, dict]:
    modules, optimizers = {}, {}
    if state.strategy.global_model is not None:
        modules["global"] = state.strategy.global_model
    if state.strategy.optimizer is not None:
        optimizers["global"] = state.strategy.optimizer
    for c in state.clients:
        if c.model is not None:
            modules[c.client_id] = c.model
            optimizers[c.client_id] = c.optimizer
    return modules, optimizers


def save_checkpoint(run_dir: RunDirectory, state: TrainingState, *, noised_sha256: str | None,
                    reached: Callable[[str], None]) -> None:
    """`reached("staged")` and `reached("committed")` between the three steps."""
    modules, optimizers = _modules(state)
    path = run_dir.file("checkpoints", "state.safetensors")
    digest = save_round_state(staged_path(path), modules=modules, optimizers=optimizers,
                              round_index=state.rounds_done)
    reached("staged")
    atomic_write_json(run_dir.file("checkpoints", "progress.json"), seal_progress({
        "rounds_done": state.rounds_done, "state_sha256": digest,
        # The sessions whose transcript lines precede this checkpoint: a resume
        # refuses a roster.json that no longer holds them (the transcript would
        # no longer verify).
        "roster_sha256": roster_digests(run_dir.file("roster.json")),
        "noised_sha256": noised_sha256, "round_logs": state.round_logs,
        # What each ledger held at this checkpoint: a resume refuses a ledger that
        # does not extend it (an edit that drops events would under-count).
        "ledger_events": {c.client_id: [e.to_dict() for e in c.ledger.events] for c in state.clients},
        # Adaptive clipping state (derived from released, private values only).
        "update_clip": state.update_clip,
        "sample_clip": {c.client_id: c.sample_clip for c in state.clients if c.sample_clip},
    }))
    reached("committed")
    promote_staged(path)


def read_checkpoint_record(run_dir: RunDirectory, *, rounds: int) -> dict:
    """The sealed progress record, once the rosters it names are still on disk."""
    progress = read_progress(run_dir.file("checkpoints", "progress.json"), rounds=rounds)
    check_rosters(run_dir.file("roster.json"), progress["roster_sha256"])
    return progress


def read_ledgers(run_dir: RunDirectory, clients: list[Client]) -> None:
    ledgers = read_json(run_dir.file("ledger.json"))
    for client in clients:
        if client.client_id not in ledgers:
            raise CheckpointError(f"ledger.json has no ledger for {client.client_id}")
        client.ledger = PrivacyLedger.from_dict(ledgers[client.client_id])


def restore_checkpoint(run_dir: RunDirectory, state: TrainingState, progress: dict, *,
                       device: torch.device) -> str | None:
    """Models, optimizers, noised data and loop state as `progress` recorded them.
    Returns the noised data's digest (None where the strategy uses none)."""
    modules, optimizers = _modules(state)
    state_path = resolve_committed(run_dir.file("checkpoints", "state.safetensors"),
                                   progress["state_sha256"], roll_forward=True)
    load_round_state(state_path, modules=modules, optimizers=optimizers,
                     expected_sha256=progress["state_sha256"])
    noised_sha256 = None
    if state.strategy.uses_noised_data:
        noised_sha256 = progress["noised_sha256"]
        tensors = load_tensors(run_dir.file("checkpoints", "noised-data.safetensors"),
                               expected_sha256=noised_sha256)
        for client in state.clients:
            if members_id(client.client_id) not in client.ledger.noised_data_ids():
                raise CheckpointError(f"ledger of {client.client_id} records no forward noise")
            client.x_shared = tensors[f"{client.client_id}.x_noised"].to(device)
            client.y_shared = tensors[f"{client.client_id}.y_shared"].to(device)
    state.rounds_done = int(progress["rounds_done"])
    state.round_logs = list(progress["round_logs"])
    state.update_clip = progress.get("update_clip")
    sample_clip = progress.get("sample_clip") or {}
    for client in state.clients:
        client.sample_clip = dict(sample_clip.get(client.client_id, {}))
    return noised_sha256
