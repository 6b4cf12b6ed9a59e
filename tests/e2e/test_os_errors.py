"""What the OS refuses reaches the user as one line and an exit code, never a
traceback: a disk that fills during `train` (exit 3, with the resume command,
and the resume works once space is freed), Ctrl-C (exit 130, the same hint),
`sample --out` on a read-only file system (exit 3) or naming a directory (exit 2),
and `privacy epsilon` asked for more steps than the accountant can hold (exit 2).

Where this process may mount (root on Linux) the file systems are real: a small
tmpfs that a filler file makes full, and a read-only tmpfs. Elsewhere the same
errno is injected into the writer that every run file goes through."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from securediff import storage

from .conftest import TINY, at_checkpoint

cli = CliRunner()


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    """A 256 MiB file system (real where mountable), and whether it is real."""
    where = tmp_path / "fs"
    real = _mount_tmpfs(where, "size=256m")
    yield where, real
    if real:
        _umount(where)


def _fill(directory: Path) -> Path:
    """Write until the file system is full; the filler is removed to free it."""
    filler = directory / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _one_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_full_disk_during_train_says_how_to_resume_and_the_resume_works(small_fs, monkeypatch):
    fs, real = small_fs
    state = {"filler": None}

    def fill_after_round_one(run, n):
        if n == 2:  # round 1 is committed; round 2 finds the disk full
            if real:
                state["filler"] = _fill(fs)
            else:
                def full(path, data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                monkeypatch.setattr(storage, "atomic_write_bytes", full)

    with monkeypatch.context() as patch:
        at_checkpoint(patch, "after", fill_after_round_one)
        result = cli.invoke(app, ["train", "--insecure-deterministic", "3", "--json",
                                  "--run.out_dir", str(fs / "runs"), "--run.name", "full", *TINY])
    line = _one_line(result, 3)
    staging = fs / "runs" / "full.incomplete"
    assert "No space left on device" in line and f"securediff train --resume {staging}" in line
    if real:
        state["filler"].unlink()
    else:
        monkeypatch.undo()
    resumed = cli.invoke(app, ["train", "--resume", str(staging), "--json"])
    assert resumed.exit_code == 0, resumed.output
    verify = cli.invoke(app, ["transcript", "verify", str(fs / "runs" / "full"), "--json"])
    assert verify.exit_code == 0, verify.output


def test_ctrl_c_keeps_the_run_and_says_how_to_resume(tmp_path, tiny_args, monkeypatch):
    def interrupt_after_round_one(run, n):
        if run.state.rounds_done == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        at_checkpoint(patch, "after", interrupt_after_round_one)
        result = cli.invoke(app, ["train", "--insecure-deterministic", "3", "--run.name", "c",
                                  "--json", *tiny_args])
    line = _one_line(result, 130)
    staging = tmp_path / "runs" / "c.incomplete"
    assert "interrupted" in line and f"--resume {staging}" in line
    assert cli.invoke(app, ["train", "--resume", str(staging), "--json"]).exit_code == 0


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    result = cli.invoke(app, ["train", "--insecure-deterministic", "1", "--run.name", "f", "--json",
                              "--run.out_dir", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out / "f"


def test_sample_to_a_read_only_file_system_is_one_line(finished_run, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "ro,size=1m"):
        def read_only(path, data):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        monkeypatch.setattr(storage, "atomic_write_bytes", read_only)
    try:
        result = cli.invoke(app, ["sample", str(finished_run), "--client", "client-00",
                                  "--per-class", "1", "--out", str(ro / "s.png")])
    finally:
        _umount(ro)
    assert "Read-only file system" in _one_line(result, 3)


def test_sample_out_naming_a_directory_is_one_line(finished_run, tmp_path):
    result = cli.invoke(app, ["sample", str(finished_run), "--client", "client-00",
                              "--per-class", "1", "--out", str(tmp_path)])
    assert "is a directory" in _one_line(result, 2)


def test_privacy_epsilon_refuses_steps_beyond_what_it_can_hold():
    result = cli.invoke(app, ["privacy", "epsilon", "--noise-multiplier", "1", "--sample-rate",
                              "0.005", "--steps", "1000000000000"])
    assert "--steps" in _one_line(result, 2)
