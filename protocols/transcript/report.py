"""What verification hands back: the report with its problems, and the view of a
round that a protocol's `audit_round` checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TranscriptProblem:
    line: int
    message: str


@dataclass(frozen=True)
class TranscriptReport:
    """The outcome of `verify_transcript`: `ok` iff `problems` is empty."""

    path: str
    sessions: int
    rounds: int
    aborted_rounds: int
    records: int
    problems: tuple[TranscriptProblem, ...]
    replayed_rounds: int = 0
    interrupted_rounds: int = 0  # left open before any release, redone by the next session
    interrupted_after_release: int = 0  # left open after release evidence, audited unclosed
    protocols: tuple[str, ...] = ()  # per session, as its header names it

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "path": self.path,
            "sessions": self.sessions,
            "rounds": self.rounds,
            "aborted_rounds": self.aborted_rounds,
            "records": self.records,
            "replayed_rounds": self.replayed_rounds,
            "interrupted_rounds": self.interrupted_rounds,
            "interrupted_after_release": self.interrupted_after_release,
            "protocols": list(self.protocols),
            "problems": [dataclasses.asdict(p) for p in self.problems],
        }


@dataclass(frozen=True)
class RoundRecord:
    """One message of a round as a protocol audit sees it (payload None if not stored)."""

    line: int
    stage: str
    type: str
    sender: str
    receiver: str
    meta: dict[str, Any] | None
    payload: bytes | None


@dataclass(frozen=True)
class RoundView:
    """A round handed to `protocol.audit_round(view) -> [(line, problem)]`.

    `statement` is the co-signed close statement, or None for a round left open
    (no round_close) that holds release evidence: an audit then checks only the
    rules that do not depend on the close (equivocation, the both-shares rule,
    shares only of neighbours, ...). `close_line` is the round_close's line, or
    for an open round the line of its last record.
    """

    round_index: int
    records: tuple[RoundRecord, ...]
    statement: dict[str, Any] | None
    close_line: int
