"""A node's final models of a Flower training run: sample from them, evaluate them.

On the node: the aggregator's `shared-model.safetensors` and
`flower-manifest.json` (public to every client), and the node's own
`state-dir/runs/RUN-ID/` (its personal model, the config it trained with, its
progress). The shared model is refused unless its SHA-256 is the one the
manifest pins; the personal model unless it is of the manifest's run and
matches the digest the node recorded when it saved it. Sampling runs the
strategy's timestep segments (pfdm: the shared model for t > t0, the personal
one below) with the same code as `securediff sample` / `evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from protocols import make_protocol
from securediff.config import from_dict, load_toml
from securediff.errors import CheckpointError
from securediff.federation.checkpoint import load_round_state
from securediff.federation.client_runtime import new_client
from securediff.federation.clients import Client
from securediff.federation.evaluate import evaluate_clients, sample_client
from securediff.federation.runner import build_strategy, resolve_device
from securediff.federation.setup import RunSetup, set_up_run
from securediff.federation.strategies import Strategy
from securediff.figures import client_samples_figure, write_figure
from securediff.flower.manifest import read_manifest
from securediff.flower.trainer import read_node_ledger
from securediff.rng import RandomSource
from securediff.statement import NOISED_DATA_ON_NODE, privacy_statement
from securediff.storage import load_tensors, read_json, resolve_committed, sha256_file


@dataclass
class NodeModels:
    setup: RunSetup
    strategy: Strategy
    client: Client
    device: torch.device
    manifest: dict[str, Any]
    personal_round: int | None  # the last round the node trained its personal model in


def open_node_models(*, manifest: Path, shared: Path, node_run: Path,
                     device: str = "auto") -> NodeModels:
    """`node_run`: the node's `state-dir/runs/RUN-ID` (or its personal.safetensors)."""
    man = read_manifest(manifest)
    pinned = man["shared_model"]
    if pinned is None:
        raise CheckpointError(f"{manifest}: the run released no shared model (no round "
                              "aggregated)")
    if sha256_file(shared) != pinned["sha256"]:
        raise CheckpointError(f"{shared} is not the shared model run {man['run_id']} ended "
                              "with: its SHA-256 differs from the manifest's")
    node_run = Path(node_run)
    if node_run.is_file():
        node_run = node_run.parent
    if node_run.name != man["run_id"]:
        raise CheckpointError(f"{node_run} holds this node's models of run {node_run.name}, "
                              f"the manifest is of run {man['run_id']}")
    progress, node = read_json(node_run / "progress.json"), read_json(node_run / "node.json")
    config = from_dict(load_toml(node_run / "config.toml")).replace(run={"device": device})
    setup = set_up_run(config)
    dev = resolve_device(config.run.device)
    strategy = build_strategy(setup)
    # Placeholder weights, replaced by the file's below; no DP noise is drawn here.
    source = RandomSource.from_os()
    strategy.init_global(source.child("shared-shape").torch_generator())
    _load_module(strategy.global_model, load_tensors(shared, expected_sha256=pinned["sha256"]),
                 shared)
    strategy.global_model.to(dev)
    ledger = read_node_ledger(node_run.parent.parent / "ledger.json")
    # The node as a Client of its own set-up, built as training built it: its member
    # data (for the metrics' minority classes), its ledger (every run it took part in).
    client = new_client(setup, strategy, index=int(node["partition_id"]),
                        client_id=str(node["client_id"]), ledger=ledger, source=source, device=dev,
                        init_gen=source.child("personal-shape").torch_generator())
    personal_round = None
    if client.model is not None:
        if not progress.get("personal_sha256"):
            raise CheckpointError(f"{node_run}: this node has no personal model of the run")
        personal = resolve_committed(node_run / "personal.safetensors", progress["personal_sha256"],
                                     roll_forward=False)
        load_round_state(personal, modules={"personal": client.model},
                         optimizers={"personal": client.optimizer},
                         expected_sha256=progress["personal_sha256"])
        personal_round = max(progress["rounds"])
    for model in (strategy.global_model, client.model):
        if model is not None:
            model.eval()
    return NodeModels(setup=setup, strategy=strategy, client=client, device=dev, manifest=man,
                      personal_round=personal_round)


def _load_module(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit this node's model: {exc}") from None


def node_statement(models: NodeModels) -> dict[str, Any]:
    """The privacy statement of this node's artefacts, from its own ledger (every run
    it took part in, their releases claimed jointly) and the run's config."""
    setup, cfg, ledger = models.setup, models.setup.config, models.client.ledger
    protocol = make_protocol(models.manifest["protocol"])
    return privacy_statement(
        strategy=cfg.federation.strategy, protocol_secure=protocol.secure,
        protocol_name=protocol.name,
        private=cfg.private and models.manifest["mode"] == "private", delta=cfg.privacy.delta,
        t0=setup.t0, clip_norm=cfg.privacy.clip_norm, forward_exact=setup.forward_epsilon_exact,
        forward_classic=setup.forward_epsilon_classic, shared_epsilon=ledger.epsilon("shared"),
        personal_epsilon=ledger.epsilon("personal"), accountant=cfg.privacy.accountant,
        labels=cfg.privacy.labels, label_epsilon=cfg.privacy.label_epsilon,
        noised_data_stored=NOISED_DATA_ON_NODE)


def sample_node(models: NodeModels, *, per_class: int, out: Path) -> Path:
    """`per_class` samples of every class through the strategy's segments; a PNG grid,
    one row per class."""
    gen = RandomSource.from_os().child("flower-sample").torch_generator()
    x, _ = sample_client(models.strategy, models.client, models.setup, per_class=per_class,
                         generator=gen, device=models.device)
    fig = client_samples_figure({models.client.client_id: x}, per_class=per_class,
                                class_names=models.setup.dataset.class_names,
                                statement=node_statement(models))
    write_figure(Path(out), fig)
    return Path(out)


def evaluate_node(models: NodeModels, *, cache_dir: Path) -> dict[str, Any]:
    """The metrics `securediff evaluate` reports, for this node's pipeline, against the
    test split of the data this node holds."""
    gen = RandomSource.from_os().child("flower-evaluate").torch_generator()
    metrics, summary, _ = evaluate_clients(models.strategy, [models.client], models.setup,
                                           cache_dir=cache_dir, device=models.device,
                                           generator=gen)
    row = metrics[0].to_dict()
    row["members"] = models.client.num_members
    return {"summary": {**summary, **_run_facts(models)}, "clients": [row]}


def _run_facts(models: NodeModels) -> dict[str, Any]:
    cfg = models.setup.config
    return {"run_id": models.manifest["run_id"], "strategy": cfg.federation.strategy,
            "protocol": models.manifest["protocol"], "dataset": cfg.data.dataset,
            "num_clients": 1, "private": cfg.private and models.manifest["mode"] == "private",
            "shared_model_round": models.manifest["shared_model"]["round"],
            "personal_model_round": models.personal_round}
