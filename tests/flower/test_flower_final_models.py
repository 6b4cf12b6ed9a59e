"""The end of a Flower training run: the manifest that pins the final shared
model, and sampling / evaluating a node's final models from it. One tiny PFDM
run (3 nodes, 2 secagg rounds) through the stand-in Grid of
test_flower_training.py, shared by the tests of this module."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cli.app import app
from protocols.messages import sha256_hex
from securediff.errors import CheckpointError
from securediff.flower.final_models import open_node_models
from securediff.flower.keys import keygen, make_roster
from securediff.flower.manifest import MANIFEST_NAME, read_manifest, write_manifest
from securediff.flower.server import AggregatorSettings, run_aggregator
from securediff.storage import load_tensors

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


def _node_run(root: Path, summary: dict, cid: str = "client-01") -> Path:
    return root / "node" / cid / "runs" / summary["run_id"]


def test_a_node_reopens_the_shared_model_and_its_own_personal_model(finished_run):
    root, run_dir, summary, _ = finished_run
    node_run = _node_run(root, summary)
    models = open_node_models(manifest=run_dir, shared=run_dir / "shared-model.safetensors",
                              node_run=node_run / "personal.safetensors", device="cpu")
    shared = load_tensors(run_dir / "shared-model.safetensors")
    personal = load_tensors(node_run / "personal.safetensors")
    for key, value in models.strategy.global_model.state_dict().items():
        assert torch.equal(value, shared[key]), key
    for key, value in models.client.model.state_dict().items():
        assert torch.equal(value, personal[f"model.personal.{key}"]), key
    # pfdm's segments: the run's shared model above t0, the node's personal one below.
    high, low = models.strategy.segments(models.client)
    assert high.model is models.strategy.global_model and low.model is models.client.model
    assert (low.start, low.end, high.end) == (0, models.setup.t0, models.setup.schedule.T)
    assert high.start == models.setup.t0
    assert models.client.client_id == "client-01" and models.personal_round == ROUNDS - 1


def test_flower_sample_draws_every_class_and_states_each_artefacts_guarantee(finished_run,
                                                                             tmp_path):
    root, run_dir, summary, _ = finished_run
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(app, [
        "flower", "sample", "--manifest", str(run_dir / MANIFEST_NAME),
        "--shared", str(run_dir / "shared-model.safetensors"),
        "--personal", str(_node_run(root, summary) / "personal.safetensors"),
        "--per-class", "2", "--out", str(out), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)
    assert reply["samples"] == str(out) and reply["run_id"] == summary["run_id"]
    # A labelled grid: 10 rows (classes) x 2 columns (samples), taller than wide.
    width, height = Image.open(out).size
    assert height > width and height >= 10 * 48
    rows = {r["artefact"]: r["guarantee"] for r in reply["privacy_statement"]["rows"]}
    assert "epsilon" in rows["noised data x~"] and "secagg" in json.dumps(reply)


def test_a_shared_model_the_manifest_does_not_pin_is_refused_in_one_line(finished_run,
                                                                          tmp_path):
    root, run_dir, summary, _ = finished_run
    tampered = tmp_path / "shared-model.safetensors"
    data = bytearray((run_dir / "shared-model.safetensors").read_bytes())
    data[-1] ^= 1  # one bit of one weight
    tampered.write_bytes(bytes(data))
    args = ["flower", "sample", "--manifest", str(run_dir), "--shared", str(tampered),
            "--personal", str(_node_run(root, summary)), "--out", str(tmp_path / "x.png")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3
    assert result.output.count("\n") == 1 and "differs from the manifest" in result.output
    assert not (tmp_path / "x.png").exists()
    other_run = tmp_path / "runs" / "0123abcd"
    other_run.mkdir(parents=True)
    args[args.index("--shared") + 1] = str(run_dir / "shared-model.safetensors")
    args[args.index("--personal") + 1] = str(other_run)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3 and "run 0123abcd" in result.output


def test_flower_evaluate_reports_the_nodes_metrics(finished_run):
    root, run_dir, summary, _ = finished_run
    result = CliRunner().invoke(app, [
        "flower", "evaluate", "--manifest", str(run_dir),
        "--shared", str(run_dir / "shared-model.safetensors"),
        "--personal", str(_node_run(root, summary, "client-02")), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)
    (row,) = reply["clients"]
    assert row["client_id"] == "client-02"
    assert reply["summary"]["run_id"] == summary["run_id"]
    assert reply["summary"]["shared_model_round"] == ROUNDS - 1
    assert 0.0 <= row["accuracy"] <= 1.0
