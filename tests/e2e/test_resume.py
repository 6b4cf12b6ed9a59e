"""A run interrupted after a complete round resumes from it, reusing the noised data."""

import json

import pytest
from typer.testing import CliRunner

from cli.app import app
from securediff.privacy.ledger import PrivacyLedger
from securediff.reopen import check_manifest
from securediff.storage import load_tensors, read_json

from .conftest import at_checkpoint, no_checkpoint_hooks

pytestmark = pytest.mark.slow(seconds=200)  # rough file total, CI machine

cli = CliRunner()


class Crash(Exception):
    pass


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, tiny_args, monkeypatch):
    args = ["train", "--insecure-deterministic", "5", "--json", *tiny_args, "--federation.rounds", "3"]
    assert cli.invoke(app, [*args, "--run.name", "whole"]).exit_code == 0

    def crash_after_first_round(run, n):
        if n == 2:  # set-up checkpoint, then round 1's
            raise Crash("simulated crash")

    at_checkpoint(monkeypatch, "after", crash_after_first_round)
    result = cli.invoke(app, [*args, "--run.name", "cut"])
    assert isinstance(result.exception, Crash)
    staging = tmp_path / "runs" / "cut.incomplete"
    assert read_json(staging / "checkpoints" / "progress.json")["rounds_done"] == 1
    noised = (staging / "checkpoints" / "noised-data.safetensors").read_bytes()
    no_checkpoint_hooks(monkeypatch)

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
    def crash(run, n):
        if run.state.rounds_done == 1:
            raise Crash()

    at_checkpoint(monkeypatch, "after", crash)
    cli.invoke(app, ["train", "--insecure-deterministic", "1", "--run.name", "e", *tiny_args])
    no_checkpoint_hooks(monkeypatch)
    path = tmp_path / "runs" / "e.incomplete" / "checkpoints" / target
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    result = cli.invoke(app, ["train", "--resume", str(path.parent.parent)])
    assert result.exit_code == 3 and "digest" in result.output


def _crash_before_checkpoint_of(rounds_done: int, monkeypatch) -> None:
    """Crash after round `rounds_done - 1` ran (its ledger written) but before its
    checkpoint: the ledger holds charges of a round the resume will redo."""
    def crash(run, n):
        if run.state.rounds_done == rounds_done:
            raise Crash("simulated crash")

    at_checkpoint(monkeypatch, "before", crash)


def _events(run_dir, artefact):
    ledgers = read_json(run_dir / "ledger.json")
    return {cid: [e for e in led["events"] if e.get("artefact") == artefact and e["kind"] == "dpsgd"]
            for cid, led in ledgers.items()}


def test_personal_charges_of_a_redone_round_are_not_counted_twice(tmp_path, tiny_args, monkeypatch):
    args = ["train", "--insecure-deterministic", "4", "--json", *tiny_args,
            "--federation.rounds", "3", "--training.personal_steps", "6",
            "--privacy.dpsgd_personal", "true"]
    assert cli.invoke(app, [*args, "--run.name", "whole"]).exit_code == 0
    _crash_before_checkpoint_of(2, monkeypatch)
    assert isinstance(cli.invoke(app, [*args, "--run.name", "cut"]).exception, Crash)
    staging = tmp_path / "runs" / "cut.incomplete"
    # Written ahead: round 1's personal steps are on the ledger (merged into one event).
    assert all(sum(e["steps"] for e in v) == 4 for v in _events(staging, "personal").values())
    no_checkpoint_hooks(monkeypatch)
    resumed = cli.invoke(app, ["train", "--resume", str(staging), "--json"])
    assert resumed.exit_code == 0, resumed.output
    whole, done = tmp_path / "runs" / "whole", tmp_path / "runs" / "cut"
    # The personal model went back to round 1's checkpoint and released nothing:
    # the redone round is charged once, as in the uninterrupted run.
    assert _events(done, "personal") == _events(whole, "personal")
    a = load_tensors(whole / "checkpoints" / "state.safetensors")
    b = load_tensors(done / "checkpoints" / "state.safetensors")
    assert all(a[k].equal(b[k]) for k in a)


def test_shared_charges_of_a_redone_round_stay_and_the_budget_says_so(tmp_path, tiny_args,
                                                                     monkeypatch):
    args = ["train", "--insecure-deterministic", "4", "--json", *tiny_args,
            "--federation.rounds", "3", "--federation.strategy", "layer-split",
            "--privacy.dpsgd_shared", "true"]
    assert cli.invoke(app, [*args, "--run.name", "whole"]).exit_code == 0
    _crash_before_checkpoint_of(2, monkeypatch)
    assert isinstance(cli.invoke(app, [*args, "--run.name", "cut"]).exception, Crash)
    no_checkpoint_hooks(monkeypatch)
    resumed = cli.invoke(app, ["train", "--resume", str(tmp_path / "runs" / "cut.incomplete"),
                               "--json"])
    assert resumed.exit_code == 0, resumed.output
    whole = read_json(tmp_path / "runs" / "whole" / "ledger.json")
    done = read_json(tmp_path / "runs" / "cut" / "ledger.json")
    for cid in whole:
        # Round 1's shared update may have left before the crash: its charge stays,
        # the redo is charged again, and the budget grew by exactly that.
        steps = [sum(e["steps"] for e in led["events"] if e["kind"] == "dpsgd")
                 for led in (whole[cid], done[cid])]
        assert steps[1] == steps[0] + 3  # local_steps of the redone round, charged twice
        assert done[cid]["budget_epsilon"] > whole[cid]["budget_epsilon"]
        eps_whole = PrivacyLedger.from_dict(whole[cid]).epsilon("shared")
        eps_done = PrivacyLedger.from_dict(done[cid]).epsilon("shared")
        assert eps_done > eps_whole


def test_resume_refuses_a_ledger_that_lost_events(tmp_path, tiny_args, monkeypatch):
    args = ["train", "--insecure-deterministic", "4", "--json", *tiny_args,
            "--federation.rounds", "3", "--training.personal_steps", "6",
            "--privacy.dpsgd_personal", "true", "--run.name", "e"]
    _crash_before_checkpoint_of(2, monkeypatch)
    cli.invoke(app, args)
    no_checkpoint_hooks(monkeypatch)
    staging = tmp_path / "runs" / "e.incomplete"
    ledgers = read_json(staging / "ledger.json")
    first = next(iter(ledgers))
    ledgers[first]["events"][-1]["steps"] = 1  # fewer personal steps than round 0 alone took
    (staging / "ledger.json").write_text(json.dumps(ledgers))
    result = cli.invoke(app, ["train", "--resume", str(staging)])
    assert result.exit_code == 3 and "holds less than" in result.output


def test_a_finished_run_with_an_edited_file_is_refused(tmp_path, tiny_args):
    assert cli.invoke(app, ["train", "--insecure-deterministic", "2", "--run.name", "f",
                            "--json", *tiny_args]).exit_code == 0
    run_dir = tmp_path / "runs" / "f"
    for target in ("ledger.json", "transcript.jsonl", "checkpoints/state.safetensors"):
        path = run_dir / target
        original = path.read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        result = cli.invoke(app, ["sample", str(run_dir), "--per-class", "1"])
        assert result.exit_code == 3, (target, result.output)
        assert "differs from manifest.json" in result.output
        assert not (run_dir / "sampled.png").exists()  # nothing written from a doubtful run
        path.write_bytes(original)
    assert cli.invoke(app, ["sample", str(run_dir), "--per-class", "1"]).exit_code == 0


@pytest.mark.parametrize("death", ["staged, not committed", "committed, not promoted"])
def test_a_kill_inside_a_checkpoint_resumes_to_the_uninterrupted_run(tmp_path, tiny_args, monkeypatch, death):
    """The state file and progress.json are two renames; a kill between them (seen in
    CI as 'does not match the digest recorded') must leave a resumable run."""
    args = ["train", "--insecure-deterministic", "5", "--json", *tiny_args, "--federation.rounds", "2"]
    assert cli.invoke(app, [*args, "--run.name", "whole"]).exit_code == 0

    def die(run, n):
        if n == 2:  # round 1's checkpoint
            raise Crash("killed")

    # "staged": its state is staged, progress.json not written; "committed":
    # progress.json is written, the state not promoted.
    at_checkpoint(monkeypatch, "staged" if death == "staged, not committed" else "committed", die)
    result = cli.invoke(app, [*args, "--run.name", "cut"])
    assert isinstance(result.exception, Crash)
    staging = tmp_path / "runs" / "cut.incomplete"
    assert (staging / "checkpoints" / "state.safetensors.staged").exists()
    monkeypatch.undo()

    resumed = cli.invoke(app, ["train", "--resume", str(staging), "--json"])
    assert resumed.exit_code == 0, resumed.output
    done = tmp_path / "runs" / "cut"
    assert not (done / "checkpoints" / "state.safetensors.staged").exists()
    a = load_tensors(tmp_path / "runs" / "whole" / "checkpoints" / "state.safetensors")
    b = load_tensors(done / "checkpoints" / "state.safetensors")
    assert all(a[k].equal(b[k]) for k in a), "resumed run differs from the uninterrupted one"
    check_manifest(done)  # every file the finished run holds matches its digest


def test_a_round_unmasked_before_a_crash_is_never_unmasked_again(tmp_path, tiny_args,
                                                                 monkeypatch):
    """Round 1 is aggregated (its Unmask answers sent), then the run dies before its
    checkpoint: the resumed session redoes the training round at a fresh protocol
    round index, every client claims each index once, and the transcript verifies."""
    args = ["train", "--insecure-deterministic", "4", "--json", *tiny_args, "--protocol", "secagg",
            "--federation.rounds", "3", "--run.name", "cut"]
    _crash_before_checkpoint_of(2, monkeypatch)
    assert isinstance(cli.invoke(app, args).exception, Crash)
    no_checkpoint_hooks(monkeypatch)
    staging = tmp_path / "runs" / "cut.incomplete"
    resumed = cli.invoke(app, ["train", "--resume", str(staging), "--json"])
    assert resumed.exit_code == 0, resumed.output
    done = tmp_path / "runs" / "cut"
    records = [json.loads(line) for line in (done / "transcript.jsonl").read_text().splitlines()]
    headers = [r for r in records if r["kind"] == "header"]
    # round index 1 was unmasked and closed: training rounds 1 and 2 run as indices 2 and 3
    assert [h["rounds"] for h in headers] == [[0, 3], [2, 4]]
    unmasked = [(r["sender"], r["round"]) for r in records
                if r["kind"] == "message" and r["stage"] == "Unmask"]
    assert len(unmasked) == len(set(unmasked))
    claims = [json.loads(line) for line in (done / "answers.jsonl").read_text().splitlines()]
    assert sorted((c["party"], c["round"]) for c in claims) == sorted(unmasked)
    verify = cli.invoke(app, ["transcript", "verify", str(done), "--json"])
    assert verify.exit_code == 0, verify.output


def test_a_resume_while_another_command_writes_the_run_is_refused(tmp_path, tiny_args,
                                                                  monkeypatch):
    """Two writers of one run would interleave their transcripts and checkpoints: the
    second stops with one line naming the holder (exit 3) and touches nothing."""
    import subprocess
    import sys

    args = ["train", "--json", *tiny_args, "--federation.rounds", "3", "--run.name", "live"]
    _crash_before_checkpoint_of(2, monkeypatch)
    assert isinstance(cli.invoke(app, args).exception, Crash)
    no_checkpoint_hooks(monkeypatch)
    staging = tmp_path / "runs" / "live.incomplete"
    pending = staging / ".progress.json.tmp"  # a temporary the live writer would own
    pending.write_text("{}")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from securediff.locks import DirectoryLock; "
         "DirectoryLock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)",
         str(staging)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = cli.invoke(app, ["train", "--resume", str(staging)])
    finally:
        holder.kill()
        holder.wait()
    assert refused.exit_code == 3, refused.output
    assert f"in use by process {holder.pid}" in refused.output
    assert "Traceback" not in refused.output and pending.exists()
    resumed = cli.invoke(app, ["train", "--resume", str(staging), "--json"])
    assert resumed.exit_code == 0, resumed.output


@pytest.mark.parametrize("name,edit", [
    ("config.toml", lambda text: text.replace("target_epsilon = 10.0", "target_epsilon = 3.0")),
    ("partition.json", lambda text: text.replace("1", "2", 1)),
])
def test_a_resume_refuses_start_files_edited_since_the_start(tmp_path, tiny_args, monkeypatch,
                                                             name, edit):
    """An edited config would recalibrate t0 mid-run and the statement would claim the
    new epsilon for data noised at the old one; an edited partition would move records."""
    args = ["train", "--json", *tiny_args, "--federation.rounds", "3", "--run.name", "cut"]
    _crash_before_checkpoint_of(2, monkeypatch)
    assert isinstance(cli.invoke(app, args).exception, Crash)
    no_checkpoint_hooks(monkeypatch)
    staging = tmp_path / "runs" / "cut.incomplete"
    path = staging / name
    before = path.read_text()
    assert edit(before) != before
    path.write_text(edit(before))
    refused = cli.invoke(app, ["train", "--resume", str(staging)])
    assert refused.exit_code == 3, refused.output
    assert name in refused.output and "differs from the one the run started with" in \
        " ".join(refused.output.split())
    path.write_text(before)
    assert cli.invoke(app, ["train", "--resume", str(staging), "--json"]).exit_code == 0
