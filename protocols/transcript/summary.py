"""Per-round, per-party summaries of a transcript (for `securediff transcript show`).

Read as the file says, unverified: run `verify_transcript` before trusting them."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.errors import TranscriptError
from protocols.transcript.format import looks_like_header


@dataclass(frozen=True)
class PartyRound:
    """One party's traffic in one round."""

    party: str
    messages: int
    bytes_sent: int
    bytes_received: int
    last_stage: str
    status: str  # "survivor", "dropped: <reason>", "aggregator" or "open"


@dataclass(frozen=True)
class RoundSummary:
    session: int
    round: int
    protocol: str
    outcome: str  # "aggregated", "aborted", or "open" (no round_close)
    reason: str | None
    stages: tuple[tuple[str, int, int], ...]  # (stage, messages, bytes) in stage order
    parties: tuple[PartyRound, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize_transcript(path: str | os.PathLike[str]) -> tuple[RoundSummary, ...]:
    """Who sent what, how much, and who dropped, per round. Reads without verifying:
    run `verify_transcript` to trust any of it."""
    rounds: list[RoundSummary] = []
    protocol, session = "?", -1
    current: dict[str, Any] | None = None
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise TranscriptError(f"cannot read transcript {path}: {exc}") from None
    if not lines or not looks_like_header(lines[0]):
        raise TranscriptError(f"{path} is not a securediff transcript (no header on line 1)")
    for raw in lines:
        try:
            rec = json.loads(raw)
            kind = rec["kind"]
        except (ValueError, KeyError, TypeError):
            continue
        if kind == "header":
            number = rec.get("session")
            protocol = str(rec.get("protocol"))
            session = number if type(number) is int else session + 1
        elif kind == "message":
            if current is None or current["round"] != rec.get("round"):
                if current is not None:
                    rounds.append(_summary(current, None))
                current = {"round": rec.get("round"), "session": session, "protocol": protocol,
                           "messages": []}
            current["messages"].append(rec)
        elif kind == "round_close":
            if current is None or current["round"] != rec.get("round"):
                current = {"round": rec.get("round"), "session": session, "protocol": protocol,
                           "messages": []}
            rounds.append(_summary(current, rec))
            current = None
    if current is not None:
        rounds.append(_summary(current, None))
    return tuple(rounds)


def _summary(acc: dict[str, Any], close: dict[str, Any] | None) -> RoundSummary:
    stages: dict[str, list[int]] = {}
    sent: dict[str, list[int]] = {}
    received: dict[str, int] = {}
    last: dict[str, str] = {}
    for rec in acc["messages"]:
        size = rec.get("payload_size", 0) if isinstance(rec.get("payload_size"), int) else 0
        stage, sender, receiver = str(rec.get("stage")), str(rec.get("sender")), str(
            rec.get("receiver"))
        stages.setdefault(stage, [0, 0])
        stages[stage][0] += 1
        stages[stage][1] += size
        sent.setdefault(sender, [0, 0])
        sent[sender][0] += 1
        sent[sender][1] += size
        received[receiver] = received.get(receiver, 0) + size
        last[sender] = stage
    # Read as written, so any shape may turn up: keep what is readable, drop the rest.
    statement = close.get("statement") if close is not None else None
    statement = statement if isinstance(statement, dict) else {}
    survivors = {s for s in _as_list(statement.get("survivors")) if isinstance(s, str)}
    dropped = {d[0]: str(d[1]) for d in _as_list(statement.get("dropped"))
               if isinstance(d, list) and len(d) == 2 and isinstance(d[0], str)}
    aggregator = close.get("sender") if close is not None else None

    def status(party: str) -> str:
        if party == aggregator:
            return "aggregator"
        if party in survivors:
            return "survivor"
        if party in dropped:
            return f"dropped: {dropped[party]}"
        return "open"

    parties = sorted(set(sent) | set(received) | set(dropped))
    return RoundSummary(
        session=acc["session"],
        round=acc["round"],
        protocol=acc["protocol"],
        outcome=str(statement.get("outcome", "open")) if close is not None else "open",
        reason=None if statement.get("reason") is None else str(statement.get("reason")),
        stages=tuple((s, c, b) for s, (c, b) in stages.items()),
        parties=tuple(
            PartyRound(party=p, messages=sent.get(p, [0, 0])[0], bytes_sent=sent.get(p, [0, 0])[1],
                       bytes_received=received.get(p, 0), last_stage=last.get(p, "-"),
                       status=status(p))
            for p in parties
        ),
    )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
