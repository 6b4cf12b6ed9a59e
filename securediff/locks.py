"""An exclusive lock on a directory that one command writes (a run directory, a
Flower node's state directory), held for the life of that command.

The lock is an advisory `flock` on `<dir>/.lock`, a file that also names its
holder (pid and host) so that a second writer can say who is in the way. The
kernel drops the lock when the holder dies, even by `kill -9`, so a stale lock
never blocks a resume; the file itself stays and means nothing without the lock.
Readers of a finished run take no lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from securediff.errors import RunDirectoryError

LOCK_NAME = ".lock"


class DirectoryLock:
    """Held from `acquire` until `release` (or the process ends)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: str | os.PathLike[str], *, what: str = "run directory",
                inheritable: bool = False) -> DirectoryLock:
        """Lock `directory`, or raise `RunDirectoryError` naming the holder.
        `inheritable` keeps the lock across `exec` (a command that becomes a
        long-running server, as `securediff flower supernode` does)."""
        path = Path(directory) / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirectoryError(f"cannot lock {directory}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunDirectoryError(f"{what} {directory} is in use by {holder}; wait for it to "
                                    "finish or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        os.fsync(fd)
        os.set_inheritable(fd, inheritable)
        return cls(path, fd)

    def release(self, *, remove: bool = False) -> None:
        """Give the lock up; `remove` also deletes the lock file (a finished run keeps
        only its own files)."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def holder_of(directory: str | os.PathLike[str]) -> str | None:
    """Who holds `directory`'s lock now, or None. A probe takes a shared lock for an
    instant (never creating the lock file), so a writer starting at that very
    moment may be told the directory is in use: it says so, and a retry succeeds."""
    try:
        fd = os.open(Path(directory) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)  # also drops the probe's shared lock
    return None


@contextmanager
def writing(directory: str | os.PathLike[str], *, what: str = "run directory") -> Iterator[None]:
    """Hold `directory`'s lock while a command adds files to it (an audit, samples or
    a report beside a finished run). A path that is not a directory is left to the
    command's own checks, which name the problem better than a lock could."""
    if not Path(directory).is_dir():
        yield
        return
    lock = DirectoryLock.acquire(directory, what=what)
    try:
        yield
    finally:
        lock.release()


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
        return f"process {int(info['pid'])} on {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
