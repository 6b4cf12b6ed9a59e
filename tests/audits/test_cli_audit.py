"""`securediff audit run` on a tiny finished run, through the CLI."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

import audits.runs as runs_module
from cli.audit import audit_app
from securediff.storage import read_json

app = typer.Typer()
app.add_typer(audit_app, name="audit")
runner = CliRunner()
QUICK = ["--clients", "client-00", "--shadows", "2", "--shadow-steps", "2",
         "--samples-per-class", "2", "--seed", "5", "--device", "cpu"]


def test_audit_run_writes_json_markdown_and_roc(tiny_run) -> None:
    result = runner.invoke(app, ["audit", "run", str(tiny_run), "--json", "--attack", "loss",
                                 "--attack", "lira-offline", "--attack", "memorization", *QUICK])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    stored = read_json(tiny_run / "audit" / "audit.json")
    assert stored == out
    for key in ("epsilon_claimed", "accountant", "epsilon_lower_bound", "ceiling", "method",
                "confidence", "auc", "tpr_at_fpr", "verdict"):
        assert key in out, key
    assert set(out["tpr_at_fpr"]) == {"0.01", "0.001"}
    targets = {t["target"]: t for t in out["targets"]}
    assert set(targets) == {"shared", "personal:client-00"}
    shared = targets["shared"]
    # PFDM's shared model: the forward-noise claim (exact accounting) of the ledger.
    assert 9.5 < shared["epsilon_claimed"] <= 10.0 and shared["accountant"] == "exact"
    assert shared["segment"][0] > 0
    assert targets["personal:client-00"]["epsilon_claimed"] is None
    for t in out["targets"]:
        assert [a["attack"] for a in t["attacks"]] == ["loss", "lira-offline"]
        for a in t["attacks"]:
            assert 0.0 <= a["epsilon_lower_bound"] <= a["ceiling"]
            # One trained model's members are not independent trials: a measurement.
            assert a["verdict"] == "measurement" and "epsilon_gdp" not in a["bound"]
            assert a["bound_above_claim"] is (None if a["epsilon_claimed"] is None
                                              else a["epsilon_lower_bound"] > a["epsilon_claimed"])
            # About 90 holdout records: 0.1% FPR is not measurable, and says why.
            assert a["tpr_at_fpr"]["0.001"] is None and a["tpr_at_fpr_reason"]["0.001"]
    # Membership attacks on one model never give a verdict, only measurements.
    assert out["verdict"] == "measurement"
    assert out["memorization"]["client-00"]["samples"] == 20
    png = (tiny_run / "audit" / "roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tiny_run / "audit" / "audit.md").read_text()
    assert "Verdict: measurement" in md and "## shared" in md
    assert "measurement: members and non-members of one trained model" in md


def test_a_violation_exits_1(tiny_run, monkeypatch) -> None:
    fake = {"run_dir": str(tiny_run), "private": False, "strategy": "pfdm", "verdict": "violation",
            "targets": [], "memorization": None, "epsilon_claimed": 1.0, "accountant": "exact",
            "epsilon_lower_bound": 2.0, "ceiling": 5.0, "method": "m", "confidence": 0.95,
            "auc": 0.9, "tpr_at_fpr": {"0.01": 0.5, "0.001": None}, "headline": None}
    monkeypatch.setattr(runs_module, "audit_run", lambda *a, **k: (fake, []))
    result = runner.invoke(app, ["audit", "run", str(tiny_run), *QUICK])
    assert result.exit_code == 1, result.output


def test_bad_requests_exit_2_or_3(tiny_run, tmp_path) -> None:
    r = runner.invoke(app, ["audit", "run", str(tiny_run), "--attack", "nope"])
    assert r.exit_code == 2 and "unknown attack" in r.output
    r = runner.invoke(app, ["audit", "run", str(tiny_run), "--clients", "client-99", "--device", "cpu"])
    assert r.exit_code == 2 and "client-99" in r.output
    r = runner.invoke(app, ["audit", "run", str(tmp_path)])
    assert r.exit_code == 3 and "not a securediff run directory" in r.output
