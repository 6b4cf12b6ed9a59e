"""A tiny PFDM run with client-level DP through secagg (Skellam shares)."""

import json

from typer.testing import CliRunner

from cli.app import app
from securediff.storage import read_json

runner = CliRunner()


def test_client_level_skellam_through_secagg_charges_every_client_each_round(tmp_path, tiny_args):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "2", "--json", "--run.name", "cl",
                                 "--privacy.client_level", "true", "--privacy.client_noise", "skellam",
                                 "--privacy.accountant", "rdp", "--protocol", "secagg",
                                 "--privacy.client_epsilon", "4", *tiny_args])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    ledgers = read_json(tmp_path / "runs" / "cl" / "ledger.json")
    for ledger in ledgers.values():
        [event] = [e for e in ledger["events"] if e["kind"] == "client_level"]
        assert event["steps"] == 2 and event["noise_added_by"] == "clients"
    [row] = [r for r in out["privacy_statement"]["rows"] if "client-level" in r["artefact"]]
    assert "add/remove of one client's whole shared update" in row["guarantee"]
    assert "epsilon = 4.000" in row["guarantee"] or "epsilon = 3.99" in row["guarantee"]
    for log in out["summary"]["rounds"]:
        assert log["protocol_stats"]["check_against_plain"]["ok"]
        assert len(log["contributors"]) == 3
