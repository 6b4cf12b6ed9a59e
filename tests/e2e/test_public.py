"""Public pretraining on font digits: recorded, free of privacy cost, and the
baselines built on it (`public-only`, `local+public`) run end to end."""

import json

import pytest
from typer.testing import CliRunner

from cli.app import app
from securediff.storage import read_json

runner = CliRunner()
PUBLIC = ["--public.dataset", "font-digits", "--public.per_class", "10", "--public.steps", "80"]


def _train(tiny_args, name, *extra):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "4", "--json", "--run.name", name,
                                 *tiny_args, *PUBLIC, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_pfdm_with_public_pretraining_records_it_and_charges_nothing_for_it(tmp_path, tiny_args):
    out = _train(tiny_args, "pub")
    run = tmp_path / "runs" / "pub"
    pretraining = read_json(run / "public_pretraining.json")
    assert pretraining["dataset"] == "font-digits" and pretraining["steps"] == 80
    assert pretraining["loss_last"] < pretraining["loss_first"]
    manifest = read_json(run / "manifest.json")
    assert manifest["public"]["dataset"] == "font-digits"
    assert "DejaVuSans.ttf" in manifest["public"]["fonts"] and manifest["public"]["augmentations"]
    assert manifest["public"]["size"] == 8 and manifest["public"]["per_class"] == 10
    notices = out["privacy_statement"]["notices"]
    assert any(n.startswith("public data: font-digits (fonts ") and "no privacy cost" in n for n in notices)
    assert "public data: font-digits" in (run / "privacy_statement.md").read_text()
    # The ledger holds PFDM's forward noise and nothing for the public data.
    ledgers = read_json(run / "ledger.json")
    assert all([e["kind"] for e in led["events"]] == ["forward_noise"] for led in ledgers.values())


@pytest.mark.parametrize("strategy", ["public-only", "local+public"])
def test_public_baselines_run_on_colored_digits(tmp_path, tiny_args, strategy):
    out = _train(tiny_args, "b", "--federation.strategy", strategy, "--data.dataset", "colored-digits")
    assert out["summary"]["epsilon_shared_max"] is None
    assert len(out["clients"]) == 3 and all(0.0 <= c["accuracy"] <= 1.0 for c in out["clients"])
    ledgers = read_json(tmp_path / "runs" / "b" / "ledger.json")
    assert all(led["events"] == [] for led in ledgers.values())
    assert read_json(tmp_path / "runs" / "b" / "manifest.json")["public"]["channels"] == 3


def test_a_public_baseline_without_public_data_is_refused(tmp_path, tiny_args):
    result = runner.invoke(app, ["train", "--federation.strategy", "public-only", *tiny_args])
    assert result.exit_code == 2 and "public.dataset" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
