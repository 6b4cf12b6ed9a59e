"""A node's training: its own data, its own ledger, its own personal model.

Node config (`flower-supernode --node-config`, besides the keys of `client.py`):

- `state-dir` (required): a node-local directory for the ledger, the once-noised
  data, the pending shared update and, per run, `runs/RUN-ID/` (the personal
  model, the config the node trained with, its progress). Nothing in it leaves
  the node.
- `dataset` (default: the run config's `data.dataset`, else digits) and
  `data-path` (MNIST-format IDX directory or MedMNIST `.npz` file for
  `mnist-idx`, `fashion-mnist-idx`, `medmnist-npz`).
- `partition-id` / `num-partitions` (default 0 / 1: all of the data): which share
  of the dataset this node holds, cut exactly as `securediff train` cuts it
  (`partition`, `alpha`, `shards-per-client`, `quantity-sigma`, `partition-seed`,
  `holdout-fraction`, `test-fraction` override the run config's [data]).
- `max-epsilon` (default 10.0): the node refuses a run whose planned mechanisms
  (forward noise, randomized-response labels, DP-SGD on the shared and/or
  personal denoiser), composed with what its ledger already holds, would cost
  more than this per record; it is also the ledger's budget, so no charge past
  it is ever made.
- `allow-insecure-seed` (default false): only then may the run config's
  `insecure-seed` drive this node's randomness (a NOT PRIVATE test run);
  otherwise its noise comes from the OS and the key is never written.

Requests: `describe` (the data shape, t0 and member count the node would train
with) and `train` (the round's shared weights in; train the shared part when
`share`, then the personal part; the update waits in `state-dir` for the
protocol round, whose input source is `node_settings.update_source`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protocols.errors import ProtocolAbort
from securediff.errors import CheckpointError, ConfigError, PrivacyError
from securediff.federation.checkpoint import load_round_state, save_round_state
from securediff.federation.client_runtime import (
    ClientStep,
    dpsgd_params_by_artefact,
    members_id,
    new_client,
    noise_client_data,
    planned_epsilon,
    planned_ledger,
)
from securediff.federation.clients import Client
from securediff.federation.runner import build_strategy, resolve_device
from securediff.federation.setup import RunSetup, set_up_run
from securediff.federation.strategies import DPSGDParams, Strategy
from securediff.flower.agreement import decode_weights, parse_config, weights_digest
from securediff.flower.node_settings import NodeSettings
from securediff.privacy.ledger import (
    PrivacyLedger,
    Release,
)
from securediff.rng import RandomSource
from securediff.storage import (
    atomic_write_json,
    atomic_write_text,
    load_tensors,
    promote_staged,
    read_json,
    resolve_committed,
    save_tensors,
    staged_path,
)

# The release that stands for the runs of a ledger written before releases were recorded.
UNRECORDED_RUNS = "runs-before-release-records"


def read_node_ledger(path: Path) -> PrivacyLedger:
    """The node's ledger (every run it took part in). One written before releases
    were recorded may hold several runs on the same x~, any of which may have read
    it directly: it is read as if one had, so its claim is the forward-noise view,
    never less (PrivacyLedger's docstring)."""
    data = read_json(path)
    ledger = PrivacyLedger.from_dict(data)
    if "releases" in data or not any(e.artefact == "shared" for e in ledger.events):
        return ledger
    return PrivacyLedger(client_id=ledger.client_id, budget_epsilon=ledger.budget_epsilon,
                         delta=ledger.delta, accountant=ledger.accountant, events=ledger.events,
                         releases=[Release(UNRECORDED_RUNS, "shared", through_dpsgd_only=False)])


class NodeTrainer:
    """Rebuilt for every message (Flower starts one process per message): all that
    lasts is in `state_dir`."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.dir = settings.state_dir
        root = (RandomSource.from_os() if settings.private
                else RandomSource.insecure_from_seed(settings.insecure_seed))
        # The same labels as the in-process runner, so a seeded node draws what
        # `securediff train` would draw for this client.
        self.source = root.child(f"client/{settings.client_id}")

    # -- requests -------------------------------------------------------------------
    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        training = request["kind"] == "train"
        progress = self._progress(str(request["run"])) if training else {"rounds": []}
        setup = self._setup(str(request["config"]), progress)
        if request["kind"] == "describe":
            c, h, _ = setup.dataset.image_shape
            split = setup.partition.clients[self.settings.partition_id]
            return {"in_channels": c, "image_size": h, "num_classes": setup.dataset.num_classes,
                    "t0": setup.t0, "members": len(split.member_indices),
                    "private": self.settings.private}
        return self._train(setup, request, progress)

    def _setup(self, config_text: str, progress: dict[str, Any]) -> RunSetup:
        """The run's set-up, refused if it would take this node past its max-epsilon."""
        config = parse_config(config_text)
        config = config.replace(data=self.settings.data,
                                run={"insecure_seed": self.settings.insecure_seed})
        setup = set_up_run(config)
        path = self.dir / "ledger.json"
        planned = planned_ledger(setup, self.settings.client_id, self._dpsgd_params(setup, progress),
                                 rounds_left=config.federation.rounds - len(progress["rounds"]),
                                 held=read_node_ledger(path) if path.exists() else None)
        eps = planned_epsilon(planned)
        if eps > self.settings.max_epsilon * (1 + 1e-9):
            raise PrivacyError(f"{self.settings.client_id}: the run's planned mechanisms (forward "
                               f"noise, labels, DP-SGD) and this node's ledger compose to "
                               f"epsilon {eps:.3f} per record, above its max-epsilon "
                               f"{self.settings.max_epsilon}")
        return setup

    def _members(self, setup: RunSetup) -> int:
        return len(setup.partition.clients[self.settings.partition_id].member_indices)

    def _dpsgd_params(self, setup: RunSetup, progress: dict[str, Any]) -> dict[str, DPSGDParams]:
        """DP-SGD calibrated as the in-process runner calibrates it for this client
        (its own member count, the run's steps and target); kept in the run's
        progress, so a run keeps one calibration (progress key "dp_plans", kept for the
        runs already on disk)."""
        if "dp_plans" in progress:
            return {k: DPSGDParams(**v) for k, v in progress["dp_plans"].items()}
        params = dpsgd_params_by_artefact(setup.config, members=self._members(setup))
        progress["dp_plans"] = {k: vars(v) for k, v in params.items()}
        return params

    def _progress(self, run: str) -> dict[str, Any]:
        if not run.isalnum():
            raise ConfigError("the run id must be alphanumeric")
        path = self.dir / "runs" / run / "progress.json"
        return read_json(path) if path.exists() else {"rounds": []}

    def _train(self, setup: RunSetup, request: Mapping[str, Any],
               progress: dict[str, Any]) -> dict[str, Any]:
        r, run = int(request["round"]), str(request["run"])
        run_dir = self.dir / "runs" / run
        run_dir.mkdir(parents=True, exist_ok=True)
        progress_path = run_dir / "progress.json"
        if not (run_dir / "config.toml").exists():
            # What `securediff flower sample/evaluate` rebuilds this node's models from.
            atomic_write_text(run_dir / "config.toml", setup.config.to_toml())
            atomic_write_json(run_dir / "node.json", {"client_id": self.settings.client_id,
                                                      "partition_id": self.settings.partition_id})
        if progress["rounds"] and r <= max(progress["rounds"]):
            raise ProtocolAbort(f"{self.settings.client_id}: round {r} of this run was trained")
        dpsgd_params = self._dpsgd_params(setup, progress)
        device = resolve_device(setup.config.run.device)
        strategy = build_strategy(setup)
        client = self._client(setup, strategy, device)
        if client.model is not None and progress.get("personal_sha256"):
            personal = resolve_committed(run_dir / "personal.safetensors", progress["personal_sha256"],
                                         roll_forward=True)
            load_round_state(personal, modules={"personal": client.model},
                             optimizers={"personal": client.optimizer},
                             expected_sha256=progress["personal_sha256"])
        weight = float(client.num_members)
        reply: dict[str, Any] = {"weight": weight, "private": self.settings.private}
        # Its ledger is written before the update is handed back, so before it can leave.
        step = ClientStep(strategy=strategy, round_index=r, dp=lambda _, artefact: dpsgd_params.get(artefact),
                          write_ledgers=lambda: self._write_ledger(client.ledger),
                          update_clip=setup.config.federation.update_clip, run_id=run)
        if bool(request["share"]):
            data = bytes(request["weights"])
            if weights_digest(data) != request["weights_sha256"]:
                raise ProtocolAbort(f"{self.settings.client_id}: the shared weights do not "
                                    "match their digest")
            strategy.init_global(self.source.child("shared-init").torch_generator())
            strategy.global_model.to(device)
            strategy.apply_global(decode_weights(data, length=strategy.global_vector().size))
            [update] = step.shared_updates([client])
            save_tensors(self.dir / "update.safetensors",
                         {"update": torch.from_numpy(update.astype(np.float32))},
                         {"round": str(r), "run": run, "weight": repr(weight)})
            reply.update(length=int(update.size), update_norm=float(np.linalg.norm(update)))
        if client.model is not None:
            step.personal([client])
            self._write_ledger(client.ledger)
            # Staged, committed by progress.json, then promoted (see resolve_committed).
            progress["personal_sha256"] = save_round_state(
                staged_path(run_dir / "personal.safetensors"), modules={"personal": client.model},
                optimizers={"personal": client.optimizer}, round_index=r)
        progress["rounds"].append(r)
        atomic_write_json(progress_path, progress)
        if client.model is not None:
            promote_staged(run_dir / "personal.safetensors")
        reply["epsilon"] = _headline(client.ledger)
        return reply

    # -- the client, its ledger and its once-noised data ------------------------------
    def _client(self, setup: RunSetup, strategy: Strategy, device: torch.device) -> Client:
        client = new_client(setup, strategy, index=self.settings.partition_id,
                            client_id=self.settings.client_id, ledger=self._ledger(setup),
                            source=self.source, device=device,
                            init_gen=self.source.child("personal-init").torch_generator())
        if strategy.uses_noised_data:
            client.x_shared, client.y_shared = self._noised(setup, client)
            client.x_shared, client.y_shared = client.x_shared.to(device), client.y_shared.to(device)
        return client

    def _ledger(self, setup: RunSetup) -> PrivacyLedger:
        path = self.dir / "ledger.json"
        if path.exists():
            ledger = read_node_ledger(path)
            ledger.budget_epsilon = self.settings.max_epsilon  # the node's cap, as configured now
            return ledger
        budget = self.settings.max_epsilon
        cfg = setup.config
        self.dir.mkdir(parents=True, exist_ok=True)
        ledger = PrivacyLedger(client_id=self.settings.client_id, budget_epsilon=budget,
                               delta=cfg.privacy.delta, accountant=cfg.privacy.accountant)
        self._write_ledger(ledger)
        return ledger

    def _write_ledger(self, ledger: PrivacyLedger) -> None:
        atomic_write_json(self.dir / "ledger.json", ledger.to_dict())

    def _noised(self, setup: RunSetup, client: Client) -> tuple[torch.Tensor, torch.Tensor]:
        """x~ once per data set, ever: the ledger is written before x~ is; a ledger that
        records the noising without the file refuses to train (never re-noises)."""
        cfg, data_id = setup.config, members_id(client.client_id)
        path, meta_path = self.dir / "noised-data.safetensors", self.dir / "noised-data.json"
        want = {"t0": setup.t0, "clip_norm": cfg.privacy.clip_norm, "labels": cfg.privacy.labels,
                "members": client.num_members, "dataset": setup.dataset.name}
        if data_id in client.ledger.noised_data_ids():
            if not meta_path.exists():
                raise CheckpointError(f"{self.dir}: the ledger records the forward noise of "
                                      f"{data_id} but the noised data is missing; it is never "
                                      "re-noised (use a new state-dir and a new data set)")
            meta = read_json(meta_path)
            if meta["params"] != want:
                raise ConfigError(f"{self.dir} holds data noised with {meta['params']}, the run "
                                  f"asks for {want}; data is noised once, ever")
            tensors = load_tensors(path, expected_sha256=meta["sha256"])
            return tensors["x_noised"], tensors["y_shared"]
        x_tilde, y_shared = noise_client_data(setup, client)
        self._write_ledger(client.ledger)  # write-ahead
        digest = save_tensors(path, {"x_noised": x_tilde, "y_shared": y_shared})
        atomic_write_json(meta_path, {"params": want, "sha256": digest})
        return x_tilde, y_shared


def _headline(ledger: PrivacyLedger) -> float | None:
    eps = [ledger.epsilon(a) for a in {e.artefact for e in ledger.events}]
    return max(eps) if eps and all(math.isfinite(e) for e in eps) else None
