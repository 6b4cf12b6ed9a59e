"""What is in an output directory: each run's state and the epsilon it claims.

`securediff runs` lists them; `securediff train --discard NAME` removes an
unfinished one. A run's state:

- running: a command holds its lock (the holder's pid and host are named);
- unfinished: `.incomplete`, nobody writing it: `train --resume` continues it;
- finished: its manifest verifies;
- corrupt: a finished run whose manifest does not verify, or a directory that
  is not a run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from securediff.errors import CheckpointError, RunDirectoryError
from securediff.locks import DirectoryLock, holder_of
from securediff.storage import INCOMPLETE_SUFFIX


@dataclass(frozen=True)
class RunEntry:
    name: str
    path: Path
    state: str  # running | unfinished | finished | corrupt
    detail: str  # the holder, the rounds done, or what is wrong
    epsilon: float | None  # the statement's headline (finished runs only)

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "state": self.state,
                "detail": self.detail, "epsilon": self.epsilon}


def _rounds_done(path: Path) -> str:
    try:
        progress = json.loads((path / "checkpoints" / "progress.json").read_text())
        rounds = int(progress["rounds_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return "no complete round yet"
    return f"{rounds} round(s) done"


def _finished(path: Path) -> RunEntry:
    from securediff.reopen import check_finished

    try:
        check_finished(path)
        headline = json.loads((path / "privacy_statement.json").read_text())["headline"]
        epsilon = float(headline["epsilon"]) if headline.get("epsilon") is not None else None
    except (CheckpointError, OSError, ValueError, KeyError, TypeError) as exc:
        return RunEntry(path.name, path, "corrupt", str(exc).replace(str(path), "").strip(" /"), None)
    return RunEntry(path.name, path, "finished", "manifest verifies", epsilon)


def list_runs(out_dir: Path) -> list[RunEntry]:
    """Every run under `out_dir` (hidden directories such as `.cache` are not runs)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise RunDirectoryError(f"{out_dir} is not a directory")
    entries = []
    for path in sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        holder = holder_of(path)
        unfinished = path.name.endswith(INCOMPLETE_SUFFIX)
        name = path.name[: -len(INCOMPLETE_SUFFIX)] if unfinished else path.name
        if holder is not None:
            entries.append(RunEntry(name, path, "running", f"by {holder}", None))
        elif unfinished:
            entries.append(RunEntry(name, path, "unfinished", _rounds_done(path), None))
        else:
            entries.append(_finished(path))
    return entries


def discard_unfinished(out_dir: Path, name: str) -> Path:
    """Remove the unfinished run `name` (holding its lock, so never one being written)."""
    path = Path(out_dir) / (name if name.endswith(INCOMPLETE_SUFFIX) else name + INCOMPLETE_SUFFIX)
    if not path.is_dir():
        finished = Path(out_dir) / name
        if finished.is_dir():
            raise RunDirectoryError(f"{finished} is a finished run; --discard removes only "
                                    "unfinished ones (delete a finished run yourself)")
        raise RunDirectoryError(f"no unfinished run {name!r} in {out_dir}")
    lock = DirectoryLock.acquire(path)  # refuses a run another command is writing
    try:
        shutil.rmtree(path)
    finally:
        lock.release()
    return path
