"""What a resume reads is what the run wrote: a killed start begins again, and an
edited progress.json or a deleted roster.json is refused with one line (exit 3)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from cli.app import app
from securediff.storage import RunDirectory, load_tensors, read_json

from .conftest import TINY, at_checkpoint

cli = CliRunner()


class Crash(Exception):
    pass


def _crash_at_checkpoint(monkeypatch, number: int) -> None:
    """Die like kill -9 at the `number`-th checkpoint (1 = the set-up's): no clean-up runs."""
    def kill(run, n):
        if n == number:
            raise Crash("simulated kill")

    at_checkpoint(monkeypatch, "before", kill)
    monkeypatch.setattr(RunDirectory, "discard", RunDirectory.release)


def _one_line_exit_3(result) -> None:
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path, tiny_args,
                                                                          monkeypatch):
    args = ["train", "--insecure-deterministic", "4", "--json", *tiny_args]
    assert cli.invoke(app, [*args, "--run.name", "whole"]).exit_code == 0
    with monkeypatch.context() as patch:
        _crash_at_checkpoint(patch, 1)  # after noise-once and the ledger, before progress.json
        assert isinstance(cli.invoke(app, [*args, "--run.name", "cut"]).exception, Crash)
    staging = tmp_path / "runs" / "cut.incomplete"
    assert (staging / "ledger.json").exists() and not (staging / "checkpoints" / "progress.json").exists()

    resumed = cli.invoke(app, ["train", "--resume", str(staging), "--json"])
    assert resumed.exit_code == 0, resumed.output
    done = tmp_path / "runs" / "cut"
    ledgers = read_json(done / "ledger.json")
    assert all(sum(e["kind"] == "forward_noise" for e in led["events"]) == 1 for led in ledgers.values())
    a = load_tensors(tmp_path / "runs" / "whole" / "checkpoints" / "state.safetensors")
    b = load_tensors(done / "checkpoints" / "state.safetensors")
    assert all(a[k].equal(b[k]) for k in a), "the restarted run differs from the uninterrupted one"
    assert cli.invoke(app, ["transcript", "verify", str(done), "--json"]).exit_code == 0


@pytest.fixture(scope="module")
def _crashed_once(tmp_path_factory):
    """One unfinished 2-round run with one complete round, trained once per module."""
    out = tmp_path_factory.mktemp("crashed") / "runs"
    with pytest.MonkeyPatch.context() as patch:
        _crash_at_checkpoint(patch, 3)  # set-up, round 1, then die in round 2's
        cli.invoke(app, ["train", "--insecure-deterministic", "2", "--run.name", "c",
                         "--run.out_dir", str(out), *TINY])
    staging = out / "c.incomplete"
    assert read_json(staging / "checkpoints" / "progress.json")["rounds_done"] == 1
    return staging


@pytest.fixture
def crashed_after_round_one(_crashed_once, tmp_path):
    """A fresh copy of that run for each test (its own directory, its own lock)."""
    copy = tmp_path / "runs" / "c.incomplete"
    shutil.copytree(_crashed_once, copy)
    return copy


def _edit_progress(staging, edit) -> None:
    path = staging / "checkpoints" / "progress.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps(edit(record)))


@pytest.mark.parametrize("edit, needle", [
    (lambda r: {}, "seal"),
    (lambda r: {**r, "rounds_done": 99}, "edited"),
    (lambda r: {k: v for k, v in r.items() if k != "ledger_events"}, "edited"),
], ids=["emptied", "rounds_done-99", "ledger-record-dropped"])
def test_an_edited_progress_file_is_refused(crashed_after_round_one, edit, needle):
    _edit_progress(crashed_after_round_one, edit)
    result = cli.invoke(app, ["train", "--resume", str(crashed_after_round_one)])
    _one_line_exit_3(result)
    assert "progress.json" in result.output and needle in result.output


def test_a_deleted_roster_is_refused(crashed_after_round_one):
    (crashed_after_round_one / "roster.json").unlink()
    result = cli.invoke(app, ["train", "--resume", str(crashed_after_round_one)])
    _one_line_exit_3(result)
    assert "roster.json" in result.output


def test_progress_missing_after_rounds_ran_is_refused_not_restarted(crashed_after_round_one):
    (crashed_after_round_one / "checkpoints" / "progress.json").unlink()
    result = cli.invoke(app, ["train", "--resume", str(crashed_after_round_one)])
    _one_line_exit_3(result)
    assert "rounds ran" in result.output


def test_a_resume_may_change_the_device_but_nothing_that_is_computed(crashed_after_round_one):
    refused = cli.invoke(app, ["train", "--resume", str(crashed_after_round_one), "--protocol", "plain"])
    assert refused.exit_code == 2 and "--device" in refused.output
    copy = crashed_after_round_one.with_name("d.incomplete")
    shutil.copytree(crashed_after_round_one, copy)
    other = cli.invoke(app, ["train", "--resume", str(copy), "--run.name", "x"])
    assert other.exit_code == 2 and "run.workers" in other.output
    resumed = cli.invoke(app, ["train", "--resume", str(copy), "--device", "cpu", "--run.workers", "1",
                               "--json"])
    assert resumed.exit_code == 0, resumed.output


def test_two_real_writers_of_one_run_one_proceeds_and_the_run_verifies(tmp_path):
    """A train still running and a resume of its directory: the resume stops with one
    line naming the holder (exit 3), the train finishes, and its transcript verifies."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = str(Path(sys.executable).with_name("securediff"))
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Many cheap rounds: the first must still run while the second starts up.
    first = subprocess.Popen([exe, "train", *TINY, "--federation.rounds", "25", "--protocol", "secagg",
                              "--federation.local_steps", "1", "--training.personal_steps", "1",
                              "--run.out_dir", str(out), "--run.name", "live", "--json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    staging = out / "live.incomplete"
    deadline = time.monotonic() + 300
    while not (staging / "checkpoints" / "progress.json").exists():
        assert first.poll() is None and time.monotonic() < deadline, "the run ended before the check"
        time.sleep(0.2)
    second = subprocess.run([exe, "train", "--resume", str(staging)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert first.poll() is None, "the first writer finished before the second tried"
    assert second.returncode == 3, second.stderr
    assert f"in use by process {first.pid}" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    assert first.wait(timeout=600) == 0, first.stderr.read().decode()
    verify = cli.invoke(app, ["transcript", "verify", str(out / "live"), "--json"])
    assert verify.exit_code == 0, verify.output


def test_resume_of_a_directory_that_is_not_a_run_says_so(tmp_path):
    (tmp_path / "notes").mkdir()
    result = cli.invoke(app, ["train", "--resume", str(tmp_path / "notes")])
    _one_line_exit_3(result)
    assert "not a securediff run directory" in result.output
