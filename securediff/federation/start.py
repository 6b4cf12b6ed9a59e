"""What a run builds at its start (and rebuilds identically on resume): the
strategy and its clients; and what it does once only: choose the forward clip
norm (adaptive PFDM) and noise each client's shared data."""

from __future__ import annotations

import torch

from securediff.federation.budget import RunBudget
from securediff.federation.client_runtime import (
    members_id,
    new_client,
    noise_client_data,
    personal_steps_per_round,
)
from securediff.federation.clients import Client
from securediff.federation.clipping import choose_forward_clip, quantile_plan
from securediff.federation.persistence import write_ledgers
from securediff.federation.setup import RunSetup
from securediff.federation.strategies import STRATEGY_CLASSES, Strategy, TrainSettings
from securediff.privacy.ledger import PrivacyLedger
from securediff.rng import RandomSource
from securediff.storage import RunDirectory, atomic_write_json, save_tensors


def build_strategy(setup: RunSetup) -> Strategy:
    cfg = setup.config
    settings = TrainSettings(
        batch_size=cfg.training.batch_size, lr=cfg.training.lr,
        label_dropout=cfg.diffusion.label_dropout, local_steps=cfg.federation.local_steps,
        personal_steps_per_round=personal_steps_per_round(cfg),
        max_grad_norm=cfg.privacy.max_grad_norm, noise_multiplicity=cfg.privacy.noise_multiplicity,
        dpsgd_shared=cfg.privacy.dpsgd_shared, dpsgd_personal=cfg.privacy.dpsgd_personal,
        secure_noise=cfg.privacy.secure_noise, clip_quantile=cfg.privacy.clip_quantile, clip_lr=cfg.privacy.clip_lr,
    )
    return STRATEGY_CLASSES[cfg.federation.strategy].from_setup(
        setup, spec=setup.spec, schedule=setup.schedule, t0=setup.t0, settings=settings)


def choose_forward_clip_once(setup: RunSetup, run_dir: RunDirectory, source: RandomSource) -> RunSetup:
    """Adaptive PFDM: C from a private quantile of the clients' image norms, t0
    for what remains of the budget. The counts are charged (and written) first."""
    cfg = setup.config
    ids = [members_id(cid) for cid in setup.client_ids]
    event = quantile_plan(cfg, setup).event
    ledgers = {}
    for cid, data_id in zip(setup.client_ids, ids, strict=True):
        ledger = PrivacyLedger(client_id=cid, budget_epsilon=cfg.privacy.target_epsilon,
                               delta=cfg.privacy.delta, accountant=cfg.privacy.accountant)
        ledger.charge(event(data_id))
        ledgers[cid] = ledger.to_dict()
    atomic_write_json(run_dir.file("ledger.json"), ledgers)
    sources = [source.child(f"client/{cid}").child("clip-quantile") for cid in setup.client_ids]
    return choose_forward_clip(setup, sources, ids)


def build_clients(setup: RunSetup, strategy: Strategy, budget: RunBudget, *, source: RandomSource,
                  init_gen: torch.Generator, device: torch.device) -> list[Client]:
    clients = []
    for index, split in enumerate(setup.partition.clients):
        cid = split.client_id
        clients.append(new_client(setup, strategy, index=index, client_id=cid,
                                  ledger=budget.ledger(setup.config, cid),
                                  source=source.child(f"client/{cid}"), init_gen=init_gen, device=device))
    strategy.attach_clients(clients)
    return clients


def noise_shared_data(setup: RunSetup, clients: list[Client], run_dir: RunDirectory, *,
                      device: torch.device) -> str:
    """PFDM: clip and noise each client's images ONCE; the ledgers are written
    before x~ (write-ahead), which persists so that a resume reuses it and never
    re-noises. Returns the file's digest."""
    tensors = {}
    for client in clients:
        x_tilde, y_shared = noise_client_data(setup, client)
        client.x_shared, client.y_shared = x_tilde.to(device), y_shared.to(device)
        tensors[f"{client.client_id}.x_noised"] = x_tilde
        tensors[f"{client.client_id}.y_shared"] = y_shared
    write_ledgers(run_dir, clients)
    return save_tensors(run_dir.file("checkpoints", "noised-data.safetensors"), tensors)
