"""kill -9 at random moments, then `train --resume`: the run finishes as if never
interrupted (deterministic test mode: the same final checkpoint bytes), the
noised data are reused (one forward-noise event per client, ever), the
transcript verifies across the sessions, and the ledger's epsilon is never
below the uninterrupted run's. DP-SGD is off here to keep the suite short (its
accounting dominates a tiny run); tests/e2e/test_resume.py covers DP-SGD charges
written ahead of a crash."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from securediff.privacy.ledger import PrivacyLedger
from securediff.storage import read_json

from .conftest import TINY

pytestmark = pytest.mark.slow(seconds=215)  # rough file total, CI machine

EXE = str(Path(sys.executable).with_name("securediff"))
ROUNDS = 3
ARGS = [*TINY, "--federation.rounds", str(ROUNDS), "--training.personal_steps", "6", "--json",
        "--protocol", "secagg"]  # kills land before, during and after unmasking
KILLS = 10


def _env() -> dict[str, str]:
    # One intra-op thread: two runs' worth of PyTorch threads on 2 cores is 10x slower.
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(out: Path, name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([EXE, "train", *ARGS, "--run.out_dir", str(out), "--run.name", name,
                             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=_env())


def _resume(staging: Path) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "train", "--resume", str(staging), "--json"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=_env(), timeout=600)


def _forward_events(run_dir: Path) -> dict[str, int]:
    ledgers = read_json(run_dir / "ledger.json")
    return {cid: sum(e["kind"] == "forward_noise" for e in led["events"])
            for cid, led in ledgers.items()}


def _epsilons(run_dir: Path) -> dict[str, float]:
    ledgers = read_json(run_dir / "ledger.json")
    return {cid: PrivacyLedger.from_dict(led).epsilon("shared") for cid, led in ledgers.items()}


def _kill_and_resume(out: Path, name: str, after: float, seed: list[str],
                     check_partial=None) -> Path:
    proc = _train(out, name, *seed)
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    staging, done = out / f"{name}.incomplete", out / name
    if done.exists():  # it finished before the kill
        return done
    if not staging.exists():  # killed before the directory was made: start again
        finished = _train(out, name, *seed)
        assert finished.wait(timeout=600) == 0, finished.stderr.read().decode()
        return done
    if not (staging / "checkpoints" / "progress.json").exists():
        # Killed before its first checkpoint: no update has left any client yet, and
        # the resume begins the run again in its own directory (no dead end).
        resumed = _resume(staging)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        return done
    # The noise was charged before the noised data were written, and only once.
    assert set(_forward_events(staging).values()) == {1}
    resumed = _resume(staging)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return done


def test_kill_at_random_points_then_resume(tmp_path: Path) -> None:
    rng = random.Random(20261126)  # the kill schedule only
    out = tmp_path / "runs"
    started = time.perf_counter()
    whole = _train(out, "whole", "--insecure-deterministic", "7")
    assert whole.wait(timeout=600) == 0, whole.stderr.read().decode()
    duration = time.perf_counter() - started
    reference = (out / "whole" / "checkpoints" / "state.safetensors").read_bytes()
    reference_eps = _epsilons(out / "whole")

    # Stratified over the whole run, start-up and evaluation included.
    points = [duration * (i + rng.random()) / KILLS for i in range(KILLS)]
    for i, after in enumerate(points):
        done = _kill_and_resume(out, f"k{i}", after, ["--insecure-deterministic", "7"])
        assert (done / "checkpoints" / "state.safetensors").read_bytes() == reference, \
            f"kill {i} at {after:.1f}s: the resumed run differs from the uninterrupted one"
        assert set(_forward_events(done).values()) == {1}  # never re-noised
        assert _epsilons(done) == reference_eps
        verify = subprocess.run([EXE, "transcript", "verify", str(done), "--json"],
                                capture_output=True, text=True, env=_env())
        assert verify.returncode == 0, (i, after, verify.stdout[-2000:])

    # Private mode (fresh OS noise), with DP-SGD on the personal models (the RDP
    # accountant keeps calibration short): the run completes, and at the kill and
    # at the end the ledger holds at least the uninterrupted run's charges for the
    # rounds done, so its epsilon is never below that run's at the same round.
    dp = ["--privacy.dpsgd_personal", "true", "--privacy.accountant", "rdp"]
    started = time.perf_counter()
    pwhole = _train(out, "pwhole", *dp)
    assert pwhole.wait(timeout=600) == 0, pwhole.stderr.read().decode()
    p_duration = time.perf_counter() - started
    reference_ledgers = read_json(out / "pwhole" / "ledger.json")

    def at_round(rounds_done: int) -> dict[str, float]:
        out_eps = {}
        for cid, led in reference_ledgers.items():
            events = []
            for e in led["events"]:
                if e["kind"] == "dpsgd" and e["artefact"] == "personal":
                    if rounds_done == 0:
                        continue
                    e = {**e, "steps": e["steps"] * rounds_done // ROUNDS}
                events.append(e)
            ledger = PrivacyLedger.from_dict({**led, "events": events})
            out_eps[cid] = (ledger.epsilon("personal")
                            if any(e["kind"] == "dpsgd" for e in events) else 0.0)
        return out_eps

    def personal_eps(run_dir: Path) -> dict[str, float]:
        ledgers = read_json(run_dir / "ledger.json")
        return {cid: PrivacyLedger.from_dict(led).epsilon("personal")
                if any(e["kind"] == "dpsgd" for e in led["events"]) else 0.0
                for cid, led in ledgers.items()}

    def no_under_count(staging: Path, rounds_done: int) -> None:
        now, then = personal_eps(staging), at_round(rounds_done)
        assert all(now[c] >= then[c] - 1e-9 for c in then), (rounds_done, now, then)

    final = at_round(ROUNDS)
    for i, after in enumerate(p_duration * (0.3 + 0.7 * (i + rng.random()) / 2) for i in range(2)):
        done = _kill_and_resume(out, f"p{i}", after, dp, check_partial=no_under_count)
        eps = personal_eps(done)
        assert all(eps[c] >= final[c] - 1e-9 for c in final), (eps, final)
        assert _epsilons(done) == _epsilons(out / "pwhole")
