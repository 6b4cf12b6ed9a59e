"""A tiny PFDM run with adaptive clipping: the private quantile chooses C and t0
within the budget, the updates carry their bits, DP-SGD charges its counts."""

import json
import tomllib

import pytest
from typer.testing import CliRunner

from cli.app import app
from securediff.storage import load_tensors, read_json

from .conftest import at_checkpoint, no_checkpoint_hooks

pytestmark = pytest.mark.slow(seconds=70)  # rough file total, CI machine

runner = CliRunner()


class Crash(Exception):
    pass


def test_adaptive_pfdm_run_records_its_choices_and_their_costs(tmp_path, tiny_args, monkeypatch):
    args = ["train", "--insecure-deterministic", "3", "--json", "--privacy.clipping", "adaptive",
            "--privacy.dpsgd_personal", "true", "--privacy.dpsgd_epsilon", "6",
            "--federation.rounds", "3", *tiny_args]
    whole = runner.invoke(app, [*args, "--run.name", "whole"])
    assert whole.exit_code == 0, whole.output
    # The same run cut after its first round and resumed: the clip norms come back
    # from the checkpoint and the quantile is not drawn (or charged) again.
    def crash_after_first_round(run, n):
        if n == 2:
            raise Crash("simulated crash")

    at_checkpoint(monkeypatch, "after", crash_after_first_round)
    assert isinstance(runner.invoke(app, [*args, "--run.name", "ad"]).exception, Crash)
    no_checkpoint_hooks(monkeypatch)
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "runs" / "ad.incomplete"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    run = tmp_path / "runs" / "ad"
    a = load_tensors(tmp_path / "runs" / "whole" / "checkpoints" / "state.safetensors")
    b = load_tensors(run / "checkpoints" / "state.safetensors")
    assert all(a[k].equal(b[k]) for k in a), "resumed adaptive run differs from the uninterrupted one"
    clips = [(r["update_clip"], r["unclipped_fraction"]) for r in out["summary"]["rounds"]]
    assert clips == [(r["update_clip"], r["unclipped_fraction"])
                     for r in json.loads(whole.stdout)["summary"]["rounds"]]
    privacy = tomllib.loads((run / "config.toml").read_text())["privacy"]
    # Digits' image norms lie in [6.1, 7.6]: the median is far below the default C = 10,
    # so t0 falls below the 675 that C = 10 needs at epsilon 10.
    assert 6.0 < privacy["clip_norm"] < 7.6 and privacy["t0"] == out["summary"]["t0"] < 675
    assert read_json(run / "manifest.json")["t0"] == privacy["t0"]
    for client in out["clients"]:
        assert 9.0 < client["epsilon_shared"] <= 10.0 + 1e-6
        assert 0 < client["epsilon_personal"] <= 6.0 + 1e-6
    for led in read_json(run / "ledger.json").values():
        kinds = [e["kind"] for e in led["events"]]
        assert kinds[:2] == ["quantile_count", "forward_noise"] and kinds.count("quantile_count") == 1
        assert [e.get("count_noise") is not None for e in led["events"] if e["kind"] == "dpsgd"] == [True]
    rounds = out["summary"]["rounds"]
    assert rounds[0]["update_clip"] is None and rounds[0]["unclipped_fraction"] is None
    assert all(r["update_clip"] > 0 and 0 <= r["unclipped_fraction"] <= 1 for r in rounds[1:])
    split = runner.invoke(app, ["privacy", "ledger", str(run), "--split", "--json"])
    assert split.exit_code == 0, split.output
    rows = json.loads(split.stdout)["split"]["client-00"]
    assert [r["mechanism"] for r in rows["shared"]] == ["quantile_count", "forward_noise"]
    assert set(rows["personal"][0]["parts"]) == {"gradients", "clip count"}
