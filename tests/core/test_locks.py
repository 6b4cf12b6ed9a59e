"""One writer per run directory: a second one stops with the holder's name, and a
holder that dies (even by kill -9) leaves nothing that blocks a resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from securediff.errors import RunDirectoryError
from securediff.locks import LOCK_NAME, DirectoryLock
from securediff.storage import RunDirectory

HOLD = ("import sys, time; from securediff.locks import DirectoryLock; "
        "DirectoryLock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)")


def test_a_second_writer_is_refused_with_the_holders_name(tmp_path):
    run = RunDirectory.create(tmp_path, "r")
    with pytest.raises(RunDirectoryError, match=f"in use by process {os.getpid()} on "):
        RunDirectory.open_incomplete(run.path)
    run.release()
    again = RunDirectory.open_incomplete(run.path)  # the command that held it ended
    again.release()


def test_the_lock_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirectoryError, match=f"in use by process {holder.pid} "):
            DirectoryLock.acquire(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    DirectoryLock.acquire(tmp_path).release()  # no stale lock after kill -9


def test_a_finished_run_keeps_no_lock_file(tmp_path):
    run = RunDirectory.create(tmp_path, "r")
    assert (run.path / LOCK_NAME).exists()
    final = run.finalize()
    assert not (final / LOCK_NAME).exists()
    assert not (tmp_path / "r.incomplete").exists()
    # A reader of the finished run takes no lock and writes nothing.
    RunDirectory(final, final)
    assert sorted(p.name for p in final.iterdir()) == []
