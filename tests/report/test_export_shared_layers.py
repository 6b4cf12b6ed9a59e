"""What the export copies of a strategy's shared model: for layer-split, never the
personal layers (label embedding, output head), even though the aggregator's global
copy of the model holds them; for a strategy with no shared model, nothing."""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from securediff.export import STATE, _shared_model
from securediff.strategy_rules import STRATEGY_RULES


def _run_dir(tmp_path, tensors):
    data = st_save(tensors)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / STATE).write_bytes(data)
    return tmp_path, {"files": {STATE: hashlib.sha256(data).hexdigest()}, "t0": 5}


def _state():
    return {
        "model.global.down.0.weight": torch.ones(3),
        "model.global.label_emb.weight": torch.ones(2),
        "model.global.out_norm.weight": torch.ones(2),
        "model.global.out.weight": torch.ones(2),
        "client.c0.model.down.0.weight": torch.zeros(3),  # a personal model: never shared
    }


def test_layer_split_exports_only_the_averaged_layers(tmp_path):
    rules = STRATEGY_RULES["layer-split"]
    assert rules.personal_layers  # the test means something only if some layers stay personal
    run_dir, manifest = _run_dir(tmp_path, _state())
    exported = st_load(_shared_model(run_dir, manifest, rules))
    assert set(exported) == {"down.0.weight"}
    meta = json.loads(_metadata(_shared_model(run_dir, manifest, rules))["securediff"])
    assert meta == {"strategy": "layer-split", "t0": 5}


def test_fedavg_exports_its_whole_global_model_and_local_none(tmp_path):
    run_dir, manifest = _run_dir(tmp_path, _state())
    exported = st_load(_shared_model(run_dir, manifest, STRATEGY_RULES["fedavg"]))
    assert set(exported) == {"down.0.weight", "label_emb.weight", "out_norm.weight", "out.weight"}
    assert _shared_model(run_dir, manifest, STRATEGY_RULES["local"]) is None


def _metadata(blob: bytes) -> dict:
    header_len = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + header_len])["__metadata__"]
