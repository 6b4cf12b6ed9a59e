"""Round checkpoints: every model and optimizer the run needs to continue,
in one safetensors file per round boundary (never pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from securediff.errors import CheckpointError
from securediff.storage import load_tensors, save_tensors


def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors = {}
    for idx, entries in state["state"].items():
        for key, value in entries.items():
            tensors[f"{prefix}.{idx}.{key}"] = torch.as_tensor(value)
    return tensors, {"param_groups": state["param_groups"], "indices": list(state["state"])}


def _restore_optimizer(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state = {}
    for idx in meta["indices"]:
        keys = [k for k in tensors if k.startswith(f"{prefix}.{idx}.")]
        state[int(idx)] = {k.rsplit(".", 1)[1]: tensors[k] for k in keys}
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"optimizer state {prefix} does not fit the model: {exc}") from None


def save_round_state(path: Path, *, modules: dict[str, torch.nn.Module],
                     optimizers: dict[str, torch.optim.Optimizer], round_index: int) -> str:
    tensors: dict[str, torch.Tensor] = {}
    opt_meta = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"model.{name}.{key}"] = value
    for name, opt in optimizers.items():
        t, meta = _optimizer_tensors(f"optim.{name}", opt)
        tensors.update(t)
        opt_meta[name] = meta
    # One metadata key: safetensors writes the metadata map in a per-process hash
    # order, so two keys would make identical states differ in their bytes.
    metadata = {"state": json.dumps({"round": round_index, "optimizers": opt_meta},
                                    sort_keys=True)}
    return save_tensors(path, tensors, metadata)


def load_round_state(path: Path, *, modules: dict[str, torch.nn.Module],
                     optimizers: dict[str, torch.optim.Optimizer], expected_sha256: str) -> None:
    tensors = load_tensors(path, expected_sha256=expected_sha256)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
    try:
        if "state" in metadata:
            opt_meta = json.loads(metadata["state"])["optimizers"]
        else:  # checkpoints written before the single key
            opt_meta = json.loads(metadata["optimizers"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise CheckpointError(f"checkpoint {path} lacks its optimizer metadata") from None
    for name, module in modules.items():
        prefix = f"model.{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {path} does not fit model {name}: {exc}") from None
    for name, opt in optimizers.items():
        if name not in opt_meta:
            raise CheckpointError(f"checkpoint {path} lacks optimizer {name}")
        _restore_optimizer(f"optim.{name}", opt, tensors, opt_meta[name])
