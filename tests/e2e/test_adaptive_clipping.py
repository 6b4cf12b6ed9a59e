"""A tiny PFDM run with adaptive clipping: the private quantile chooses C and t0
within the budget, the updates carry their bits, DP-SGD charges its counts."""

import json
import tomllib

from typer.testing import CliRunner

from cli.app import app
from securediff.storage import read_json

runner = CliRunner()


def test_adaptive_pfdm_run_records_its_choices_and_their_costs(tmp_path, tiny_args):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "3", "--json", "--run.name", "ad",
                                 "--privacy.clipping", "adaptive", "--privacy.dpsgd_personal", "true",
                                 "--privacy.dpsgd_epsilon", "6", "--federation.rounds", "3", *tiny_args])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    run = tmp_path / "runs" / "ad"
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
        assert kinds[:2] == ["quantile_count", "forward_noise"]
        assert [e.get("count_noise") is not None for e in led["events"] if e["kind"] == "dpsgd"] == [True]
    rounds = out["summary"]["rounds"]
    assert rounds[0]["update_clip"] is None and rounds[0]["unclipped_fraction"] is None
    assert all(r["update_clip"] > 0 and 0 <= r["unclipped_fraction"] <= 1 for r in rounds[1:])
    split = runner.invoke(app, ["privacy", "ledger", str(run), "--split", "--json"])
    assert split.exit_code == 0, split.output
    rows = json.loads(split.stdout)["split"]["client-00"]
    assert [r["mechanism"] for r in rows["shared"]] == ["quantile_count", "forward_noise"]
    assert set(rows["personal"][0]["parts"]) == {"gradients", "clip count"}
