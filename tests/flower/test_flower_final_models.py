"""The end of a Flower training run: the manifest that pins the final shared
model, and sampling / evaluating a node's final models from it. One tiny PFDM
run (3 nodes, 2 secagg rounds) through the stand-in Grid of
test_flower_training.py, shared by the tests of this module."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from protocols.messages import sha256_hex
from securediff.errors import CheckpointError
from securediff.flower.keys import keygen, make_roster
from securediff.flower.manifest import MANIFEST_NAME, read_manifest, write_manifest
from securediff.flower.server import AggregatorSettings, run_aggregator

from .test_flower_training import CLIENTS, TINY, DirectExchange

ROUNDS = 2


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("flower-final")
    keys = root / "keys"
    keygen(["aggregator", *CLIENTS], keys)
    make_roster(sorted(keys.glob("*.pub")), aggregator="aggregator", out=keys / "roster.json")
    (root / "tiny.toml").write_text(TINY + "[eval]\nsamples_per_class = 4\nevaluator_epochs = 1\n")
    node_configs = {
        10 + i: {"client-id": cid, "identity-key": str(keys / f"{cid}.key"),
                 "roster": str(keys / "roster.json"), "state-dir": str(root / "node" / cid),
                 "dataset": "digits", "partition-id": i, "num-partitions": len(CLIENTS)}
        for i, cid in enumerate(CLIENTS)
    }
    run_config = {"run-dir": str(root / "run"), "roster": str(keys / "roster.json"),
                  "aggregator-key": str(keys / "aggregator.key"), "protocol": "secagg",
                  "rounds": ROUNDS, "min-nodes": len(CLIENTS), "stage-timeout": 30.0,
                  "config": str(root / "tiny.toml"), "inputs": "train"}
    summary = run_aggregator(AggregatorSettings.from_run_config(run_config),
                             DirectExchange(node_configs, run_config))
    return root, Path(run_config["run-dir"]), summary, node_configs


def test_the_manifest_pins_the_final_shared_model_and_the_last_round_close(finished_run):
    _, run_dir, summary, _ = finished_run
    manifest = read_manifest(run_dir)
    shared = run_dir / "shared-model.safetensors"
    assert manifest["run_id"] == summary["run_id"] and manifest["protocol"] == "secagg"
    assert manifest["mode"] == "private"
    assert manifest["rounds_closed"] == ROUNDS and manifest["rounds_aggregated"] == [0, 1]
    digest = hashlib.sha256(shared.read_bytes()).hexdigest()
    assert manifest["shared_model"] == {"path": shared.name, "sha256": digest, "round": 1}
    assert digest == summary["rounds"][-1]["shared_model_sha256"]
    # The last line of the transcript is round 1's close; the manifest names its digest.
    last = (run_dir / "transcript.jsonl").read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    assert json.loads(last)["kind"] == "round_close"
    assert manifest["transcript"] == {"path": "transcript.jsonl",
                                      "last_round_close": {"round": 1, "sha256": sha256_hex(last)}}
    assert manifest["files"]["shared-model.safetensors"] == digest
    assert set(manifest["files"]) >= {"config.toml", "roster.json", "transcript.jsonl",
                                      "flower.json", "aggregates.safetensors"}


def test_a_crash_while_writing_leaves_no_half_written_manifest(finished_run, tmp_path,
                                                                monkeypatch):
    _, run_dir, summary, _ = finished_run
    copy_dir = tmp_path / "run"
    copy_dir.mkdir()
    for name in ("transcript.jsonl", "shared-model.safetensors"):
        (copy_dir / name).write_bytes((run_dir / name).read_bytes())

    def crash(*_args):
        raise OSError("disk gone")

    monkeypatch.setattr("securediff.storage.os.replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_manifest(copy_dir, run_id=summary["run_id"], protocol="secagg",
                       mode=summary["mode"], rounds=summary["rounds"], planned_rounds=ROUNDS)
    assert sorted(p.name for p in copy_dir.iterdir()) == ["shared-model.safetensors",
                                                           "transcript.jsonl"]


def test_a_shared_model_written_after_the_last_round_is_refused(finished_run, tmp_path):
    _, run_dir, summary, _ = finished_run
    (tmp_path / "transcript.jsonl").write_bytes((run_dir / "transcript.jsonl").read_bytes())
    (tmp_path / "shared-model.safetensors").write_bytes(b"another model")
    with pytest.raises(CheckpointError, match="not the shared model of the run's last round"):
        write_manifest(tmp_path, run_id=summary["run_id"], protocol="secagg",
                       mode=summary["mode"], rounds=summary["rounds"], planned_rounds=ROUNDS)
    assert not (tmp_path / MANIFEST_NAME).exists()
