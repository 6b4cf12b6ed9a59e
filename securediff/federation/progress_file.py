"""`checkpoints/progress.json`: the record that commits a round checkpoint.

A resume believes this file about how many rounds are done, which state and
noised data belong to it, what each ledger held and which sessions signed the
transcript so far. So it is sealed: it carries the SHA-256 of its own
canonical content, and a resume refuses a file whose seal does not match, whose
fields are not what the writer writes, or whose roster record is no longer in
roster.json. Nothing here is secret-keyed: whoever can rewrite the whole run
directory can forge it, as they can forge anything in it; what the seal stops is
an edit (by hand or by a tool) that would make a resume compute or claim
something other than the run did.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from securediff.errors import CheckpointError
from securediff.storage import read_json

SEAL = "sha256"
_REQUIRED = {"rounds_done": int, "state_sha256": str, "round_logs": list, "roster_sha256": list,
             "ledger_events": dict}


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


def seal_progress(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with the digest of its own canonical JSON added."""
    return {**record, SEAL: _digest(record)}


def read_progress(path: Path, *, rounds: int) -> dict[str, Any]:
    """The sealed record at `path`, or `CheckpointError` naming what is wrong."""
    record = read_json(path)
    if not isinstance(record, dict) or SEAL not in record:
        raise CheckpointError(f"{path} carries no seal (edited, or written by a version that "
                              "did not seal it): refusing to resume")
    if record[SEAL] != _digest(record):
        raise CheckpointError(f"{path} was edited after it was written (its seal does not match "
                              "its content): refusing to resume")
    for key, kind in _REQUIRED.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise CheckpointError(f"{path}: field {key!r} is missing or malformed")
    done = record["rounds_done"]
    if not 0 <= done <= rounds or len(record["round_logs"]) != done:
        raise CheckpointError(f"{path}: rounds_done {done} does not fit a run of {rounds} rounds "
                              f"with {len(record['round_logs'])} round logs")
    return record


def roster_digests(path: Path) -> list[str]:
    """The digest of every session roster in `path` (none if it does not exist yet)."""
    from protocols import load_rosters

    return [r.digest for r in load_rosters(path)] if Path(path).exists() else []


def check_rosters(path: Path, recorded: list[str]) -> None:
    """Every roster the checkpoint recorded is still in roster.json, in order (a
    session started after the checkpoint may have appended one more)."""
    if not recorded:
        return
    from protocols.errors import ProtocolError

    try:
        present = roster_digests(path)
    except ProtocolError as exc:  # RosterError and the roster's field checks
        raise CheckpointError(str(exc)) from None
    if present[: len(recorded)] != recorded:
        raise CheckpointError(
            f"{path} no longer holds the session rosters recorded at the last checkpoint "
            "(deleted or edited): the transcript would not verify; restore it")
