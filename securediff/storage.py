"""Run directories: atomic writes, safetensors checkpoints, digests.

A run is written into `<out_dir>/<name>.incomplete/` and renamed to
`<out_dir>/<name>/` only when it has finished, so a directory without the
suffix is always complete. A run that fails before its first round completes
leaves nothing behind; one that fails later stays `.incomplete` and can be
resumed (`securediff train --resume`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from securediff.errors import CheckpointError, RunDirectoryError
from securediff.locks import DirectoryLock

INCOMPLETE_SUFFIX = ".incomplete"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync of the directory: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON: {exc}") from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file atomically; returns its SHA-256."""
    data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(path: Path, *, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never a pickle), checking its digest when one is recorded."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc.strerror}") from None
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise CheckpointError(f"checkpoint {path} does not match the digest recorded in the manifest")
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: {exc}") from None


def staged_path(path: Path) -> Path:
    """Where the next version of a checkpoint waits until its digest is committed."""
    path = Path(path)
    return path.with_name(path.name + ".staged")


def promote_staged(path: Path) -> None:
    """Make the staged version of `path` the current one (after its digest was committed)."""
    path = Path(path)
    os.replace(staged_path(path), path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def resolve_committed(path: Path, sha256: str, *, roll_forward: bool) -> Path:
    """The version of a checkpoint whose digest the progress file committed.

    A checkpoint and the progress file that records its digest are two files, and
    a process can die between any two renames. So the writer stages the new
    checkpoint (`save_tensors(staged_path(p))`), commits its digest in the progress
    file, and only then promotes it over `p`. Whatever the point of death, one of
    `p` and its staged version carries the committed digest. `roll_forward`
    finishes an interrupted promotion (the writer, on resume); a reader leaves
    the directory alone. With neither matching, `p` is returned and the load
    reports the mismatch.
    """
    path = Path(path)
    if path.exists() and sha256_file(path) == sha256:
        return path
    staged = staged_path(path)
    if staged.exists() and sha256_file(staged) == sha256:
        if roll_forward:
            promote_staged(path)
            return path
        return staged
    return path


class RunDirectory:
    """The directory of one run, staged under a `.incomplete` name until finished."""

    def __init__(self, staging: Path, final: Path, lock: DirectoryLock | None = None) -> None:
        self.path = staging
        self.final = final
        # One writer at a time (create and open_incomplete take it): a second
        # `train --resume`, or a resume while the run is still going, stops with the
        # holder's name instead of interleaving. Readers of a finished run hold none.
        self.lock = lock

    @classmethod
    def create(cls, out_dir: Path, name: str) -> RunDirectory:
        out_dir = Path(out_dir)
        final = out_dir / name
        staging = out_dir / (name + INCOMPLETE_SUFFIX)
        if final.exists():
            raise RunDirectoryError(f"run directory {final} already exists; choose another --run.name")
        if staging.exists():
            raise RunDirectoryError(
                f"an unfinished run is in {staging}; continue it with --resume {staging} or remove it"
            )
        try:
            staging.mkdir(parents=True)
        except OSError as exc:
            raise RunDirectoryError(f"cannot create {staging}: {exc.strerror}") from None
        return cls(staging, final, DirectoryLock.acquire(staging))

    @classmethod
    def open_incomplete(cls, path: Path) -> RunDirectory:
        path = Path(path)
        if not path.name.endswith(INCOMPLETE_SUFFIX):
            if (path.parent / (path.name + INCOMPLETE_SUFFIX)).is_dir():
                path = path.parent / (path.name + INCOMPLETE_SUFFIX)
            elif path.is_dir() and (path / "manifest.json").is_file():
                raise RunDirectoryError(f"{path} is a finished run; there is nothing to resume")
            elif path.is_dir():
                raise RunDirectoryError(f"{path} is not a securediff run directory")
        if not path.is_dir():
            raise RunDirectoryError(f"no unfinished run at {path}")
        final = path.parent / path.name[: -len(INCOMPLETE_SUFFIX)]
        if final.exists():
            raise RunDirectoryError(f"{final} already exists; cannot finish {path} into it")
        run = cls(path, final, DirectoryLock.acquire(path))  # before anything is touched
        # Half-written temporaries of a killed atomic write: never read, and they
        # would otherwise end up in the finished run's manifest.
        for tmp in path.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        return run

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def finalize(self) -> Path:
        if self.lock is not None:  # still held: nobody else can take it now
            self.lock.path.unlink(missing_ok=True)
        try:
            os.replace(self.path, self.final)
        except OSError as exc:
            raise RunDirectoryError(f"cannot finish run into {self.final}: {exc.strerror}") from None
        self.release()
        self.path = self.final
        return self.final

    def release(self) -> None:
        """Give up the lock (the command that writes the run ends, finished or not)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()
