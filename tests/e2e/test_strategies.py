"""Every strategy completes a tiny run; DP-SGD paths charge their ledgers."""

import json

import pytest
from typer.testing import CliRunner

from cli.app import app
from securediff.storage import read_json

pytestmark = pytest.mark.slow(seconds=80)  # rough file total, CI machine

runner = CliRunner()


@pytest.mark.parametrize("strategy", ["fedavg", "local", "centralized"])
def test_baselines_run_and_claim_no_privacy(tmp_path, tiny_args, strategy):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "2", "--json", "--run.name", strategy,
                                 "--federation.strategy", strategy, *tiny_args])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["summary"]["epsilon_shared_max"] is None
    assert out["privacy_statement"]["headline"]["epsilon"] is None


def test_layer_split_with_dpsgd_charges_the_shared_artefact(tmp_path, tiny_args):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "2", "--json", "--run.name", "ls",
                                 "--federation.strategy", "layer-split", "--privacy.dpsgd_shared", "true",
                                 "--privacy.dpsgd_epsilon", "8", "--privacy.noise_multiplicity", "2", *tiny_args])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert 0 < out["summary"]["epsilon_shared_max"] <= 8.0 + 1e-6
    ledgers = read_json(tmp_path / "runs" / "ls" / "ledger.json")
    steps = [e["steps"] for led in ledgers.values() for e in led["events"] if e["kind"] == "dpsgd"]
    assert steps and all(s == 2 * 3 for s in steps)  # rounds x local_steps, merged into one event


def test_pfdm_with_personal_dpsgd_protects_the_personal_model(tmp_path, tiny_args):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "2", "--json", "--run.name", "pp",
                                 "--privacy.dpsgd_personal", "true", "--privacy.dpsgd_epsilon", "5", *tiny_args])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert all(0 < c["epsilon_personal"] <= 5.0 + 1e-6 for c in out["clients"])
    assert "DP-SGD" in out["privacy_statement"]["rows"][2]["guarantee"]


def test_randomized_response_labels_are_charged(tmp_path, tiny_args):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "2", "--json", "--run.name", "rr",
                                 "--privacy.labels", "randomized-response", "--privacy.label_epsilon", "2",
                                 "--privacy.target_epsilon", "8", *tiny_args])
    assert result.exit_code == 0, result.output
    ledgers = read_json(tmp_path / "runs" / "rr" / "ledger.json")
    assert all(any(e["kind"] == "randomized_response" for e in led["events"]) for led in ledgers.values())
    out = json.loads(result.stdout)
    assert "randomized response" in out["privacy_statement"]["rows"][1]["guarantee"]


def test_sample_and_evaluate_a_finished_run(tmp_path, tiny_args):
    assert runner.invoke(app, ["train", "--insecure-deterministic", "4", "--run.name", "s", *tiny_args]).exit_code == 0
    run = tmp_path / "runs" / "s"
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["sample", str(run), "--client", "client-01", "--per-class", "2",
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(result.stdout)["privacy_statement"]["rows"]
    bad = runner.invoke(app, ["sample", str(run), "--client", "nobody"])
    assert bad.exit_code == 2 and "nobody" in bad.output
    ev = runner.invoke(app, ["evaluate", str(run), "--json"])
    assert ev.exit_code == 0, ev.output
    assert len(json.loads(ev.stdout)["clients"]) == 3
    missing = runner.invoke(app, ["sample", str(tmp_path / "nope")])
    assert missing.exit_code == 3


def test_colored_digits_run(tmp_path, tiny_args):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "2", "--json", "--run.name", "c",
                                 "--data.dataset", "colored-digits", *tiny_args])
    assert result.exit_code == 0, result.output


def test_pfdm_with_shared_dpsgd_claims_the_smaller_view(tmp_path, tiny_args):
    """DP-SGD on PFDM's noised data at its default epsilon 10: the composition by group
    privacy has no finite bound, but the shared model is a post-processing of x~ alone,
    so the run proceeds and claims the forward noise's epsilon."""
    result = runner.invoke(app, ["train", "--insecure-deterministic", "2", "--json", "--run.name", "pd",
                                 "--privacy.dpsgd_shared", "true", *tiny_args])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    ledgers = read_json(tmp_path / "runs" / "pd" / "ledger.json")
    for led in ledgers.values():
        dpsgd = [e for e in led["events"] if e["kind"] == "dpsgd"]
        assert dpsgd and all(e["input"] == "noised" and e["artefact"] == "shared" for e in dpsgd)
    assert 9.0 < out["summary"]["epsilon_shared_max"] <= 10.0 + 1e-6
