"""A run interrupted after a complete round resumes from it, reusing the noised data."""

import pytest
from typer.testing import CliRunner

from cli.app import app
from securediff.federation import runner as runner_module
from securediff.storage import load_tensors, read_json

cli = CliRunner()


class Crash(Exception):
    pass


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, tiny_args, monkeypatch):
    args = ["train", "--insecure-deterministic", "5", "--json", *tiny_args, "--federation.rounds", "3"]
    assert cli.invoke(app, [*args, "--run.name", "whole"]).exit_code == 0

    original = runner_module.FederatedRun._checkpoint
    calls = {"n": 0}

    def crash_after_first_round(self):
        original(self)
        calls["n"] += 1
        if calls["n"] == 2:  # set-up checkpoint, then round 1's
            raise Crash("simulated crash")

    monkeypatch.setattr(runner_module.FederatedRun, "_checkpoint", crash_after_first_round)
    result = cli.invoke(app, [*args, "--run.name", "cut"])
    assert isinstance(result.exception, Crash)
    staging = tmp_path / "runs" / "cut.incomplete"
    assert read_json(staging / "checkpoints" / "progress.json")["rounds_done"] == 1
    noised = (staging / "checkpoints" / "noised-data.safetensors").read_bytes()
    monkeypatch.setattr(runner_module.FederatedRun, "_checkpoint", original)

    resumed = cli.invoke(app, ["train", "--resume", str(staging), "--json"])
    assert resumed.exit_code == 0, resumed.output
    done = tmp_path / "runs" / "cut"
    assert (done / "checkpoints" / "noised-data.safetensors").read_bytes() == noised  # never re-noised
    ledgers = read_json(done / "ledger.json")
    assert all(sum(e["kind"] == "forward_noise" for e in led["events"]) == 1 for led in ledgers.values())
    a = load_tensors(tmp_path / "runs" / "whole" / "checkpoints" / "state.safetensors")
    b = load_tensors(done / "checkpoints" / "state.safetensors")
    assert all(a[k].equal(b[k]) for k in a), "resumed run differs from the uninterrupted one"
    # The resumed session pinned a second roster; the transcript verifies across both sessions.
    verify = cli.invoke(app, ["transcript", "verify", str(done), "--json"])
    assert verify.exit_code == 0, verify.output


def test_resume_refuses_a_finished_run(tmp_path, tiny_args):
    assert cli.invoke(app, ["train", "--insecure-deterministic", "1", "--run.name", "f", *tiny_args]).exit_code == 0
    result = cli.invoke(app, ["train", "--resume", str(tmp_path / "runs" / "f")])
    assert result.exit_code == 3 and "finished" in result.output


@pytest.mark.parametrize("target", ["state.safetensors", "noised-data.safetensors"])
def test_resume_refuses_an_edited_checkpoint(tmp_path, tiny_args, monkeypatch, target):
    original = runner_module.FederatedRun._checkpoint

    def crash(self):
        original(self)
        if self.state.rounds_done == 1:
            raise Crash()

    monkeypatch.setattr(runner_module.FederatedRun, "_checkpoint", crash)
    cli.invoke(app, ["train", "--insecure-deterministic", "1", "--run.name", "e", *tiny_args])
    monkeypatch.setattr(runner_module.FederatedRun, "_checkpoint", original)
    path = tmp_path / "runs" / "e.incomplete" / "checkpoints" / target
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    result = cli.invoke(app, ["train", "--resume", str(path.parent.parent)])
    assert result.exit_code == 3 and "digest" in result.output
