"""`securediff transcript verify`: exit 0 verified, 1 failed, 3 unreadable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cli.transcript import transcript_app
from protocols import (
    ClientInput,
    Identities,
    TranscriptWriter,
    make_protocol,
    run_round,
    save_roster,
)

app = typer.Typer()
app.add_typer(transcript_app, name="transcript")
runner = CliRunner()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    ids = Identities.generate(["h0", "h1", "h2"])
    protocol = make_protocol("plain")
    save_roster(tmp_path / "roster.json", ids.roster())
    rng = np.random.default_rng(0)
    with TranscriptWriter.open(
        tmp_path / "transcript.jsonl", identities=ids, protocol=protocol
    ) as tw:
        for r in range(2):
            inputs = {c: ClientInput(vector=rng.normal(size=6), weight=1.0) for c in ids.client_ids}
            run_round(protocol, round_index=r, inputs=inputs, identities=ids, transcript=tw)
    return tmp_path


def _verify(*args: str):
    return runner.invoke(app, ["transcript", "verify", *args])


def test_a_good_run_directory_verifies(run_dir: Path) -> None:
    result = _verify(str(run_dir))
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and "2 round(s)" in result.output


def test_json_output_is_one_object(run_dir: Path) -> None:
    result = _verify(str(run_dir / "transcript.jsonl"), "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["rounds"] == 2 and report["problems"] == []


def test_a_tampered_transcript_fails_with_exit_1(run_dir: Path) -> None:
    path = run_dir / "transcript.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # drop the last round_close
    result = _verify(str(run_dir))
    assert result.exit_code == 1
    assert f"line {len(lines) - 1}:" in result.output and "verification failed" in result.output
    report = json.loads(_verify(str(run_dir), "--json").stdout)
    assert report["ok"] is False and report["problems"][0]["line"] == len(lines) - 1


def test_the_wrong_roster_fails_with_exit_1(run_dir: Path, tmp_path_factory) -> None:
    other = tmp_path_factory.mktemp("other") / "roster.json"
    save_roster(other, Identities.generate(["h0", "h1", "h2"]).roster())
    result = _verify(str(run_dir), "--roster", str(other))
    assert result.exit_code == 1 and "not among those given" in result.output


def test_unreadable_inputs_exit_3(run_dir: Path) -> None:
    assert _verify(str(run_dir / "missing.jsonl")).exit_code == 3
    (run_dir / "notes.txt").write_text("not a transcript\n")
    assert (
        _verify(str(run_dir / "notes.txt"), "--roster", str(run_dir / "roster.json")).exit_code == 3
    )
    (run_dir / "roster.json").write_text("{")
    assert _verify(str(run_dir)).exit_code == 3
