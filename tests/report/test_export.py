"""`securediff export RUN DIR`: only the allow-listed files leave, everything else is
named with its reason; unverifiable runs and non-empty targets are refused."""

from __future__ import annotations

import json

from safetensors import safe_open
from typer.testing import CliRunner

from cli.app import app
from protocols import load_rosters, verify_transcript
from securediff.storage import read_json, sha256_file

runner = CliRunner()
ALLOWED = {"shared_model.safetensors", "privacy_statement.md", "privacy_statement.json",
           "transcript.jsonl", "roster.json", "metrics.json", "samples.png", "report.html",
           "EXPORT.json"}


def test_export_copies_exactly_the_allow_list(run_copy, tmp_path) -> None:
    (run_copy / "keys").mkdir()
    (run_copy / "keys" / "node.key").write_text("secret")  # a file a later version might add
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", str(run_copy), str(out), "--json"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)
    exported = {str(p.relative_to(out)) for p in out.rglob("*")}
    assert exported == ALLOWED
    assert not any("noised" in n or "checkpoint" in n or "personal" in n for n in exported)
    left = {row["name"]: row["why"] for row in reply["left_out"]}
    for name in ("checkpoints/noised-data.safetensors", "checkpoints/state.safetensors",
                 "partition.json", "ledger.json", "manifest.json", "config.toml"):
        assert name in left and left[name], name
    assert left["keys/node.key"] == "not on the export allow-list"
    # The shared model only: the global model's tensors, no client's model, no optimizer.
    with safe_open(str(out / "shared_model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    with safe_open(str(run_copy / "checkpoints" / "state.safetensors"), "pt") as fh:
        global_keys = {k.removeprefix("model.global.") for k in fh.keys()
                       if k.startswith("model.global.")}
    assert keys == global_keys and not any("client-" in k or "optim" in k for k in keys)
    # Each file as EXPORT.json lists it; samples carry the statement's guarantee.
    listed = {row["name"]: row for row in read_json(out / "EXPORT.json")["files"]}
    assert set(listed) == ALLOWED - {"EXPORT.json"}
    for name, row in listed.items():
        assert sha256_file(out / name) == row["sha256"], name
    assert "DP-SGD" in listed["samples.png"]["guarantee"]
    # What left is enough to check the transcript without the run directory.
    report = verify_transcript(out / "transcript.jsonl", load_rosters(out / "roster.json"))
    assert report.ok, report.problems


def test_export_output_fits_80_columns(run_copy, tmp_path) -> None:
    result = runner.invoke(app, ["export", str(run_copy), str(tmp_path / "o")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "left out" in result.output and "noised-data" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_export_refuses_a_non_empty_target_and_an_unverifiable_run(run_copy, tmp_path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    result = runner.invoke(app, ["export", str(run_copy), str(full)])
    assert result.exit_code == 2 and "not an empty directory" in result.output
    (run_copy / "roster.json").write_text("{}")  # edited after the run finished
    result = runner.invoke(app, ["export", str(run_copy), str(tmp_path / "new")])
    assert result.exit_code == 3 and "roster.json" in result.output
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.partial").exists()
    unfinished = run_copy.rename(tmp_path / "tiny.incomplete")
    result = runner.invoke(app, ["export", str(unfinished), str(tmp_path / "new")])
    assert result.exit_code == 3 and "unfinished" in result.output
