"""`securediff experiment run --quick` end to end on a tiny config: cell files,
resumability, the report's tables and JSON, a missing method reported as such,
and bad input refused with one line and exit code 2."""

import dataclasses
import json
import math

import pytest
from typer.testing import CliRunner

from audits.shared_mia import dp_auc_ceiling
from cli.app import app
from securediff.experiments import suites
from securediff.experiments.aggregate import mean_std

runner = CliRunner()
NOWHERE = suites.Method("nowhere", "no-such-strategy", "none", None, setting=suites.CORE_SETTING)


@pytest.fixture
def core_with_unregistered(monkeypatch):
    core = suites.SUITES["core"]
    monkeypatch.setitem(suites.SUITES, "core", dataclasses.replace(core, methods=core.methods + (NOWHERE,)))


def _run(out, *extra):
    return runner.invoke(app, ["experiment", "run", "--quick", "--methods", "local,pfdm-eps10,nowhere",
                               "--out", str(out), *extra])


def test_quick_suite_cells_resume_and_report(tmp_path, core_with_unregistered):
    out = tmp_path / "suite"
    first = _run(out, "--json")
    assert first.exit_code == 0, first.output
    status = {c["method"]: c["status"] for c in json.loads(first.stdout)["cells"]}
    assert status == {"local": "done", "pfdm-eps10": "done", "nowhere": "missing"}
    assert json.loads(first.stdout)["private"] is False

    cell = json.loads((out / "cells/pfdm-eps10/seed-0/cell.json").read_text())
    assert (out / "cells/pfdm-eps10/seed-0/run/metrics.json").is_file()
    assert (out / "cells/pfdm-eps10/seed-0/run/audit/audit.json").is_file()
    assert cell["private"] is False and cell["seed"] == 0 and cell["how"] == "trained"
    assert 0.0 <= cell["mia_shared"]["auc"] <= 1.0
    assert cell["mia_shared"]["epsilon_claimed"] == pytest.approx(cell["summary"]["epsilon_shared_max"])
    assert cell["forward_epsilon"]["exact"] <= 10.0 < cell["forward_epsilon"]["classic"]
    local = json.loads((out / "cells/local/seed-0/cell.json").read_text())
    assert local["mia_shared"]["auc"] is None and "no shared denoiser" in local["mia_shared"]["reason"]
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave no temporaries

    # A second invocation finds every cell finished and runs nothing.
    before = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/seed-0/cell.json")}
    again = _run(out)
    assert again.exit_code == 0, again.output
    assert "0 cell(s) run, 2 already finished, 1 method(s) missing" in again.output
    assert "NOT PRIVATE" in again.output
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # A cell whose result file is gone is redone from its finished run (not retrained).
    (out / "cells/pfdm-eps10/seed-0/cell.json").unlink()
    redo = _run(out, "--json")
    status = {c["method"]: c["status"] for c in json.loads(redo.stdout)["cells"]}
    assert status == {"local": "skipped", "pfdm-eps10": "done", "nowhere": "missing"}
    assert json.loads((out / "cells/pfdm-eps10/seed-0/cell.json").read_text())["how"] == "finished run reused"

    md, res = tmp_path / "docs/RESULTS.md", tmp_path / "docs/results/core.json"
    md.parent.mkdir(parents=True)
    md.write_text("# Results\n\nHand-written comparison.\n")
    for _ in range(2):  # the second report replaces its block and keeps the hand-written text
        rep = runner.invoke(app, ["experiment", "report", str(out), "--write", str(md), "--results", str(res)])
        assert rep.exit_code == 0, rep.output
    text = md.read_text()
    assert text.count("BEGIN GENERATED: core") == 1 and "Hand-written comparison." in text
    # A named block: the suite's own block is left as it was, the named one added beside it.
    part = runner.invoke(app, ["experiment", "report", str(out), "--write", str(md), "--block", "core-part",
                               "--figures", str(tmp_path / "part")])
    assert part.exit_code == 0, part.output
    both = md.read_text()
    assert both.startswith(text.rstrip("\n")) and both.count("BEGIN GENERATED: core-part") == 1
    assert "## Suite `core`, block `core-part`" in both and "--block core-part" in both
    assert both.count("<!-- END GENERATED: core -->") == 1 and both.count("<!-- END GENERATED: core-part -->") == 1
    md.write_text(text)
    assert "| local | 1 |" in text and "| pfdm-eps10 | 1 |" in text and "NOT PRIVATE" in text
    assert "| nowhere | no-such-strategy | strategy 'no-such-strategy' is not registered" in text
    results = json.loads(res.read_text())
    assert [r["name"] for r in results["rows"]] == ["local", "pfdm-eps10"]
    missing = {m["method"]: m["reason"] for m in results["missing"]}
    assert "not registered" in missing["nowhere"] and "not run yet" in missing["fedavg"]
    pfdm = next(r for r in results["rows"] if r["name"] == "pfdm-eps10")
    # PFDM's claim is replace-one already: the comparison column repeats it.
    assert pfdm["relation"] == "replace-one"
    assert pfdm["metrics"]["epsilon_replace_one"]["mean"] == pytest.approx(cell["summary"]["epsilon_shared_max"])
    assert "| relation | eps replace-one |" in text
    assert pfdm["metrics"]["accuracy"]["mean"] == pytest.approx(cell["summary"]["mean"]["accuracy"])
    assert pfdm["vs_local"]["accuracy_points"]["mean"] == pytest.approx(
        100 * (cell["summary"]["mean"]["accuracy"] - local["summary"]["mean"]["accuracy"]))
    # Both downstream classifiers; local is the only non-collaborative row run, so the best.
    assert 0.0 <= cell["summary"]["mean"]["accuracy_cnn"] <= 1.0
    assert pfdm["vs_best_non_collaborative"]["accuracy_cnn_points"]["against"] == "local"
    assert pfdm["vs_best_non_collaborative"]["accuracy_cnn_points"]["mean"] == pytest.approx(
        100 * (cell["summary"]["mean"]["accuracy_cnn"] - local["summary"]["mean"]["accuracy_cnn"]))
    assert "| accuracy (logreg) | accuracy (CNN) |" in text and "change (points) vs `local` |" in text
    assert results["wall_seconds"]["cells_total"] > 0 and len(results["wall_seconds"]["invocations"]) == 3
    for png in (res.parent / "core-epsilon.png", res.parent / "core-pfdm-eps10-samples.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A cell's run edited after it finished: the report refuses before it reports.
    ledger = out / "cells/pfdm-eps10/seed-0/run/ledger.json"
    ledger.write_text(ledger.read_text() + " ")
    edited = runner.invoke(app, ["experiment", "report", str(out)])
    assert edited.exit_code == 3 and "ledger.json" in edited.output, edited.output


@pytest.mark.parametrize("args, needle", [
    (["run", "--suite", "nope", "--out", "{tmp}/x"], "unknown suite 'nope'"),
    (["run", "--methods", "local,nope", "--out", "{tmp}/x"], "unknown method 'nope'"),
    (["run", "--out", "{tmp}/file"], "is not a directory"),
    (["report", "{tmp}/missing"], "is not a directory"),
    (["report", "{tmp}"], "cannot read"),
    (["report", "{tmp}", "--block", "Core Part"], "--block 'Core Part'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    (tmp_path / "file").write_text("")
    result = runner.invoke(app, ["experiment", *[a.format(tmp=tmp_path) for a in args]])
    assert result.exit_code == 2, result.output
    assert needle in result.output and result.output.strip().count("\n") == 0
    assert not (tmp_path / "x").exists()


def test_a_suite_directory_refuses_another_suite(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s/suite.json").write_text(json.dumps({"suite": "extensions", "quick": True, "seeds": 1}))
    result = runner.invoke(app, ["experiment", "run", "--quick", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "holds suite 'extensions'" in result.output


def test_dp_auc_ceiling_and_mean_std():
    assert dp_auc_ceiling(epsilon=0.0, delta=0.0) == pytest.approx(0.5, abs=1e-6)
    # Pure eps-DP: the trade-off curve's area is e^eps / (1 + e^eps).
    assert dp_auc_ceiling(epsilon=1.0, delta=0.0) == pytest.approx(math.e / (1 + math.e), abs=1e-6)
    assert dp_auc_ceiling(epsilon=4.0, delta=1e-5) < dp_auc_ceiling(epsilon=10.0, delta=1e-5) < 1.0
    assert dp_auc_ceiling(epsilon=None, delta=1e-5) is None
    assert mean_std([1.0, 3.0, None]) == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    assert mean_std([None]) == {"mean": None, "std": None, "n": 0}


def test_an_add_remove_claim_is_restated_under_replace_one(tmp_path):
    """A distributed DP-SGD ledger (add/remove) gets its replace-one epsilon from the
    same events analysed under replace-one: larger than the claim, and what the report
    compares rows on."""
    from securediff.experiments.aggregate import shared_relation_and_replace_one
    from securediff.privacy.accountants import compose_epsilon
    from securediff.privacy.ledger import DistributedSkellamEvent, ForwardNoiseEvent, PrivacyLedger

    steps = DistributedSkellamEvent(l1_sensitivity=400.0, l2_sensitivity=40.0, noise_variance=40.0 ** 2 * 9,
                                    sample_rate=0.5, steps=20, artefact="shared", scale=30.0, min_survivors=8)
    forward = ForwardNoiseEvent(sigma=40.0, clip_norm=10.0, t0=850, data_id="client-00/members")
    for name, events in (("ar", [steps]), ("ro", [forward, steps])):
        ledger = PrivacyLedger(client_id="client-00", budget_epsilon=1e9, delta=1e-5, accountant="rdp",
                               events=events)
        run = tmp_path / name / "run"
        run.mkdir(parents=True)
        (run / "ledger.json").write_text(json.dumps({"client-00": ledger.to_dict()}))
        relation, eps = shared_relation_and_replace_one(tmp_path / name, {"run_dir": "run"})
        claimed = ledger.epsilon("shared")
        if name == "ar":
            assert relation == "add/remove" and eps > claimed
        else:
            assert relation == "replace-one" and eps == pytest.approx(claimed)
        assert eps == pytest.approx(compose_epsilon(events, delta=1e-5, accountant="rdp", relation="replace_one"))
    assert shared_relation_and_replace_one(tmp_path, {"run_dir": "nowhere"}) == (None, None)
