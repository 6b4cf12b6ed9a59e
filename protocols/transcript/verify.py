"""Verifying a transcript against pinned rosters, trusting nothing the aggregator
wrote: shapes, chains, signatures, stage order, co-signed closes, stored
payloads, and each protocol's own audit of every round holding release evidence."""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.errors import MessageDecodeError, ProtocolError, TranscriptError
from protocols.hazmat.signing import verify_signature
from protocols.messages import canonical_json, decode, sha256_hex
from protocols.registry import make_protocol
from protocols.roster import Roster
from protocols.stages import AggregationProtocol
from protocols.transcript.format import (
    CLOSE_STAGE,
    COMMON_FIELDS,
    COSIG_DOMAIN,
    COSIG_FIELDS,
    HEX64,
    HEX128,
    RECORD_DOMAIN,
    SCHEMAS,
    STATEMENT_FIELDS,
    TRANSCRIPT_VERSION,
    UNCHECKABLE,
    cosig_digest,
    looks_like_header,
    message_meta,
    payload_dir,
    records_digest,
    shape_ok,
    statement_digest,
    unsigned_bytes,
)
from protocols.transcript.report import RoundRecord, RoundView, TranscriptProblem, TranscriptReport


def verify_transcript(
    path: str | os.PathLike[str],
    rosters: Roster | Sequence[Roster],
    *,
    payloads: str | os.PathLike[str] | None = None,
    expected_rounds: int | None = None,
    roster_sha256: Collection[str] | None = None,
) -> TranscriptReport:
    """Replay a transcript against pinned rosters, trusting nothing the aggregator says.

    The result is only as good as `rosters`: they must come from somewhere the
    aggregator cannot write (a roster file of the reviewer's own copy). With
    `roster_sha256`, only rosters with one of those digests (`Roster.digest`, as
    the headers name them) are trusted, so `rosters` may come from the run
    directory: a session under any other roster fails.
    `payloads` is the directory of stored payloads (default: `<path>.payloads` if it
    exists); each stored payload is checked against its record, and rounds whose
    payloads are all there are replayed by the protocol (`replayed_rounds`).
    A cut between two rounds leaves a valid shorter transcript: `expected_rounds`
    (what the reviewer knows the run was to aggregate) catches it.
    Verification failures come back as problems with line numbers (`ok=False`); no
    content of the file raises. `TranscriptError` means the file cannot be read or
    is not a transcript at all (no header on its first line).
    """
    given = (rosters,) if isinstance(rosters, Roster) else tuple(rosters)
    if not given:
        raise TranscriptError("no roster to verify against")
    pinned = None if roster_sha256 is None else frozenset(d.lower() for d in roster_sha256)
    path = Path(path)
    store = Path(payloads) if payloads is not None else payload_dir(path)
    if payloads is not None and not store.is_dir():
        raise TranscriptError(f"no payload directory {store}")
    verifier = _Verifier(given, pinned=pinned, payloads=store if store.is_dir() else None)
    try:
        with open(path, "rb") as fh:
            first = fh.readline()
            if not looks_like_header(first):
                raise TranscriptError(
                    f"{path} is not a securediff transcript (no header on line 1)"
                )
            verifier.feed(1, first)
            for lineno, raw in enumerate(fh, 2):
                verifier.feed(lineno, raw)
    except OSError as exc:
        raise TranscriptError(f"cannot read transcript {path}: {exc}") from None
    verifier.finish()
    if expected_rounds is not None and verifier.rounds < expected_rounds:
        verifier.fail(
            verifier.last_line,
            f"transcript ends after {verifier.rounds} aggregated round(s), {expected_rounds} "
            "expected (truncated?)",
        )
    return TranscriptReport(
        path=str(path),
        sessions=verifier.session + 1,
        rounds=verifier.rounds,
        aborted_rounds=verifier.aborted,
        records=verifier.last_line,
        problems=tuple(sorted(verifier.problems, key=lambda p: p.line)),
        replayed_rounds=verifier.replayed,
        interrupted_rounds=verifier.interrupted,
        interrupted_after_release=verifier.interrupted_after_release,
        protocols=tuple(verifier.protocols),
    )


@dataclass
class _Round:
    index: int
    records: list[tuple[int, str]] = field(default_factory=list)
    stage_index: int = 0
    seen: set[tuple[str, str, str]] = field(default_factory=set)
    views: list[RoundRecord] = field(default_factory=list)
    evidence_line: int | None = None  # first record in one of the protocol's evidence_stages


class _Verifier:
    def __init__(
        self,
        rosters: Sequence[Roster],
        *,
        pinned: frozenset[str] | None = None,
        payloads: Path | None = None,
    ) -> None:
        self.payloads = payloads
        self.replayed = 0
        self.pinned = pinned
        self.rosters = {r.digest: r for r in rosters if pinned is None or r.digest in pinned}
        self.problems: list[TranscriptProblem] = []
        self.heads: dict[str, tuple[int, str]] = {}
        self.session = -1
        self.roster: Roster | None = None
        self.protocol: AggregationProtocol | None = None
        self.header: dict[str, Any] = {}
        self.round: _Round | None = None
        self.session_closed = -1  # highest round closed in the current session
        self.released: dict[int, int] = {}  # round index -> line of its first evidence
        self.protocols: list[str] = []
        self.interrupted = self.interrupted_after_release = 0
        self.last_aggregated = -1
        self.rounds = self.aborted = self.last_line = 0

    def fail(self, line: int, message: str) -> None:
        self.problems.append(TranscriptProblem(line=line, message=message))

    def feed(self, line: int, raw: bytes) -> None:
        self.last_line = line
        if not raw.endswith(b"\n"):
            self.fail(line, "incomplete line (no newline): the file was cut mid-record")
        body = raw[:-1] if raw.endswith(b"\n") else raw
        try:
            rec = json.loads(body.decode("ascii"), parse_constant=_no_constant)
        except (ValueError, RecursionError):
            self.fail(line, "not a JSON record")
            return
        kind = rec.get("kind") if isinstance(rec, dict) else None
        kind = kind if isinstance(kind, str) else None
        schema = {**COMMON_FIELDS, **SCHEMAS.get(kind, {})}
        if kind == "header" and "rounds" not in rec:
            del schema["rounds"]
        if kind not in SCHEMAS or not shape_ok(rec, schema):
            self.fail(line, "malformed record (unknown kind, missing or extra fields)")
            return
        if rec["v"] != TRANSCRIPT_VERSION:
            self.fail(line, f"unsupported record version {rec['v']}")
            return
        if canonical_json(rec) != body:
            self.fail(line, "record is not in canonical form (edited by hand?)")
        if kind != "header" and rec["session"] != self.session:
            self.fail(
                line,
                f"record of session {rec['session']} but the current session is {self.session} "
                "(missing session header?)",
            )
        try:
            getattr(self, f"_{kind}")(line, rec, sha256_hex(body))
        except Exception as exc:  # noqa: BLE001 -- last line of defence, see below
            # Every malformed input should meet a named check first (the mutation
            # tests look for this message); should one slip through, it still fails
            # the transcript at its line instead of crashing the reviewer's tool.
            self.fail(line, f"{UNCHECKABLE} ({type(exc).__name__})")

    def finish(self) -> None:
        if self.round is not None:
            self.fail(
                self.last_line,
                f"transcript ends inside round {self.round.index}: no round_close (truncated?)",
            )
            self._leave_open(self.round)
            return
        planned = self.header.get("rounds")
        if planned is not None and self.session_closed < planned[1] - 1:
            self.fail(
                self.last_line,
                f"transcript ends after round {self.session_closed} but its last session "
                f"planned rounds {planned[0]}..{planned[1] - 1} (truncated, or the run stopped)",
            )

    # -- per-kind checks -----------------------------------------------------------
    def _header(self, line: int, rec: dict[str, Any], digest: str) -> None:
        planned = rec.get("rounds")
        redo = planned[0] if (
            isinstance(planned, list) and len(planned) == 2 and type(planned[0]) is int
        ) else None
        if self.round is not None:
            if self._leave_open(self.round):
                # A crash after release evidence: audited above without a close; the
                # index stays released, so the run must move on to a fresh one.
                self.interrupted_after_release += 1
            elif redo is not None:
                # A crash left the round open before anything was released; the resumed
                # session redoes it, at its index or (as the runner does) a fresh one.
                self.interrupted += 1
            else:
                self.fail(line, f"new session while round {self.round.index} is still open")
            self.round = None
        if redo is not None and redo <= self.last_aggregated:
            # A session that plans a closed round again: allowed as long as it never
            # releases it again (the released-twice rule then names the round).
            self.last_aggregated = redo - 1
        if rec["session"] != self.session + 1:
            self.fail(line, f"session {rec['session']} follows session {self.session}")
        self.session = rec["session"]
        self.header = rec
        self.protocols.append(rec["protocol"])
        self.session_closed = -1
        planned = rec.get("rounds")
        if planned is not None and not (
            len(planned) == 2
            and all(type(r) is int for r in planned)
            and 0 <= planned[0] < planned[1]
        ):
            self.fail(line, f"header plans impossible rounds {planned!r}")
            self.header = {**rec, "rounds": None}
        self.roster = self.rosters.get(rec["roster"])
        if self.roster is None and self.pinned is not None and rec["roster"] not in self.pinned:
            self.fail(line, f"session {rec['session']}'s roster {rec['roster'][:16]}... is not "
                            f"the pinned roster ({', '.join(sorted(d[:16] for d in self.pinned))}"
                            "...)")
        elif self.roster is None:
            self.fail(
                line, f"the session's roster {rec['roster'][:16]}... is not among those given"
            )
        self.protocol = self._make_protocol(line, rec)
        self._aggregator_record(line, rec, digest)

    def _make_protocol(self, line: int, rec: dict[str, Any]) -> AggregationProtocol | None:
        """The session's protocol, from the header's name and parameters (None, with a
        problem, where they make none)."""
        try:
            protocol = make_protocol(rec["protocol"], **rec["params"])
        except (ProtocolError, ValueError, TypeError, ArithmeticError) as exc:
            self.fail(line, f"cannot check stages: {exc}")
            return None
        return protocol

    def _message(self, line: int, rec: dict[str, Any], digest: str) -> None:
        rnd = self._current_round(line, rec["round"])
        if (
            rnd.evidence_line is None
            and self.protocol is not None
            and rec["stage"] in self.protocol.evidence_stages
        ):
            rnd.evidence_line = line
        self._stage_rules(line, rec, rnd)
        self._signed(line, rec["sender"], rec, RECORD_DOMAIN, digest)
        rnd.records.append((line, digest))
        payload = self._payload(line, rec)
        rnd.views.append(
            RoundRecord(line=line, stage=rec["stage"], type=rec["type"], sender=rec["sender"],
                        receiver=rec["receiver"], meta=rec["meta"], payload=payload)
        )

    def _payload(self, line: int, rec: dict[str, Any]) -> bytes | None:
        """The stored payload of a message, checked against its record (None if absent)."""
        if self.payloads is None or not HEX64.fullmatch(rec["payload_sha256"]):
            return None
        try:
            payload = (self.payloads / rec["payload_sha256"]).read_bytes()
        except OSError:
            return None
        if sha256_hex(payload) != rec["payload_sha256"] or len(payload) != rec["payload_size"]:
            self.fail(line, "the stored payload does not match the record's digest and size")
            return None
        try:
            msg = decode(payload)
        except MessageDecodeError as exc:
            self.fail(line, f"the stored payload is not a message: {exc}")
            return None
        if (msg.TYPE_NAME, msg.sender, msg.receiver, msg.round_index) != (
            rec["type"], rec["sender"], rec["receiver"], rec["round"]
        ):
            self.fail(line, "the stored payload is another message than the record names")
        elif message_meta(self.protocol, payload) != rec["meta"]:
            self.fail(line, "the record's meta does not match its stored payload")
        return payload

    def _round_close(self, line: int, rec: dict[str, Any], digest: str) -> None:
        """A close the aggregator did not validly sign is reported as such and nothing
        else: its contents would point at innocent earlier records."""
        mark = len(self.problems)
        self._round_close_checks(line, rec, digest)
        if self.roster is not None and not self._signature_ok(rec["sender"], rec, RECORD_DOMAIN):
            del self.problems[mark:]
            self.fail(line, f"invalid signature by {rec['sender']}: the round_close is not "
                            "trusted")

    def _round_close_checks(self, line: int, rec: dict[str, Any], digest: str) -> None:
        st = rec["statement"]
        rnd = self.round if self.round is not None else self._current_round(line, rec["round"])
        self.round = None
        if rec["stage"] != CLOSE_STAGE or not shape_ok(st, STATEMENT_FIELDS):
            self.fail(line, "malformed round_close statement")
            self._aggregator_record(line, rec, digest)
            return
        if rec["round"] != rnd.index or st["round"] != rnd.index:
            self.fail(line, f"round_close names round {rec['round']} but round {rnd.index} is open")
        expected = {
            "v": TRANSCRIPT_VERSION,
            "protocol": self.header.get("protocol"),
            "roster": self.header.get("roster"),
            "session": self.session,
        }
        for key, value in expected.items():
            if st[key] != value:
                self.fail(
                    line, f"statement {key} {st[key]!r} does not match the session ({value!r})"
                )
        self._check_record_list(line, rec["records"], st["records_digest"], rnd)
        survivors = self._check_parties(line, st, rnd)
        if survivors is None:  # named already; the outcome rules would only echo it
            survivors = []
        else:
            self._check_outcome(line, st, survivors, rnd)
        self._check_cosigs(line, rec["cosigs"], st, survivors)
        self._audit(line, st, rnd)
        self._release(rnd)
        self._aggregator_record(line, rec, digest)
        self.session_closed = max(self.session_closed, rnd.index)
        if st["outcome"] == "aggregated":
            self.rounds += 1
            self.last_aggregated = max(self.last_aggregated, rnd.index)
        else:
            self.aborted += 1

    def _audit(self, line: int, st: dict[str, Any], rnd: _Round) -> None:
        """The protocol's own rules over a closed round (both-shares, thresholds, replay)."""
        if not all(isinstance(s, str) for s in st["survivors"]) or not all(
            isinstance(d, list) and len(d) == 2 and isinstance(d[0], str) for d in st["dropped"]
        ):
            return  # _check_parties has named it; the protocol's rules cannot be read
        self._run_audit(RoundView(round_index=rnd.index, records=tuple(rnd.views), statement=st,
                                  close_line=line))
        replays = getattr(self.protocol, "audit_round", None) is not None
        if replays and st["outcome"] == "aggregated" and all(v.payload is not None
                                                            for v in rnd.views):
            self.replayed += 1

    def _leave_open(self, rnd: _Round) -> bool:
        """A round that ends without a round_close. If it holds release evidence, the
        protocol audits it without a statement and its index counts as released.
        Returns whether it held evidence."""
        if rnd.evidence_line is None:
            return False
        last = rnd.records[-1][0] if rnd.records else self.last_line
        self._run_audit(RoundView(round_index=rnd.index, records=tuple(rnd.views),
                                  statement=None, close_line=last))
        self._release(rnd)
        return True

    def _run_audit(self, view: RoundView) -> None:
        audit = getattr(self.protocol, "audit_round", None)
        if audit is None:
            return
        try:
            found = [(int(at), str(problem)) for at, problem in audit(view)]
        except Exception:  # noqa: BLE001 -- the audit reads attacker-written metas
            # A record whose meta was edited into another shape: its signature check
            # has already failed; the protocol's rules cannot be read from it.
            found = [(view.close_line, f"round {view.round_index}'s records are malformed: "
                                       "the protocol's rules cannot be checked")]
        for at, problem in found:
            self.fail(at, problem)

    def _release(self, rnd: _Round) -> None:
        """Record that `rnd` released its index; a second release of one index fails."""
        if rnd.evidence_line is None:
            return
        first = self.released.setdefault(rnd.index, rnd.evidence_line)
        if first != rnd.evidence_line:
            self.fail(rnd.evidence_line, f"round {rnd.index} released twice: it already holds "
                                         f"release evidence at line {first}")

    # -- helpers -------------------------------------------------------------------
    def _current_round(self, line: int, index: int) -> _Round:
        if self.round is None:
            if index <= self.last_aggregated:
                self.fail(
                    line, f"round {index} does not follow closed round {self.last_aggregated}"
                )
            self.round = _Round(index=index)
        elif index != self.round.index:
            self.fail(line, f"record of round {index} while round {self.round.index} is open "
                            "(its round_close is missing)")
            self._leave_open(self.round)
            self.round = _Round(index=index)  # later checks then point at their own records
        return self.round

    def _stage_rules(self, line: int, rec: dict[str, Any], rnd: _Round) -> None:
        if self.protocol is None or self.roster is None:
            return
        names = [s.name for s in self.protocol.stages]
        if rec["stage"] not in names:
            self.fail(line, f"{rec['stage']!r} is not a stage of {self.protocol.name}")
            return
        index = names.index(rec["stage"])
        spec = self.protocol.stages[index]
        if index < rnd.stage_index:
            self.fail(line, f"stage {spec.name} after {names[rnd.stage_index]}: illegal order")
        rnd.stage_index = max(rnd.stage_index, index)
        if rec["type"] not in spec.message_types:
            self.fail(line, f"message type {rec['type']!r} does not belong to stage {spec.name}")
        clients, agg = self.roster.client_ids, self.roster.aggregator_id
        sender, receiver = rec["sender"], rec["receiver"]
        legal = (
            (sender in clients and receiver == agg)
            if spec.sender == "client"
            else (sender == agg and receiver in clients)
        )
        if not legal:
            self.fail(
                line, f"{sender} -> {receiver} is not a legal direction for stage {spec.name}"
            )
        key = (spec.name, sender, receiver)
        if key in rnd.seen:
            self.fail(line, f"second {spec.name} message from {sender} to {receiver} in the round")
        rnd.seen.add(key)
        if not HEX64.fullmatch(rec["payload_sha256"]) or rec["payload_size"] < 0:
            self.fail(line, "malformed payload digest or size")

    def _check_record_list(self, line: int, listed: list[Any], digest: str, rnd: _Round) -> None:
        for i, (rec_line, rec_digest) in enumerate(rnd.records):
            if i >= len(listed) or listed[i] != rec_digest:
                self.fail(
                    rec_line,
                    f"record differs from the one round {rnd.index}'s close lists at position {i} "
                    "(edited, reordered or inserted)",
                )
                break
        else:
            if len(listed) > len(rnd.records):
                self.fail(line, f"round {rnd.index}'s close lists records the transcript lacks")
        if not all(isinstance(d, str) and HEX64.fullmatch(d) for d in listed) or (
            records_digest(listed) != digest
        ):
            self.fail(line, "the record list does not match the co-signed records digest")

    def _check_parties(self, line: int, st: dict[str, Any], rnd: _Round) -> list[str] | None:
        survivors = st["survivors"]
        dropped = st["dropped"]
        if not all(isinstance(s, str) for s in survivors) or survivors != sorted(set(survivors)):
            self.fail(line, "survivors must be distinct, sorted party ids")
            return None
        if not all(
            isinstance(d, list) and len(d) == 2 and all(isinstance(x, str) for x in d)
            for d in dropped
        ):
            self.fail(line, "dropped must be [client, reason] pairs")
            return survivors
        dropped_ids = [d[0] for d in dropped]
        if set(dropped_ids) & set(survivors) or len(set(dropped_ids)) != len(dropped_ids):
            self.fail(line, "a client is listed twice among survivors and dropped")
        if self.roster is not None:
            clients = set(self.roster.client_ids)
            for c in sorted(set(survivors + dropped_ids) - clients):
                self.fail(line, f"{c!r} is not a client in the session's roster")
            involved = {p for key in rnd.seen for p in key[1:]} - {self.roster.aggregator_id}
            for c in sorted(involved - set(survivors) - set(dropped_ids)):
                self.fail(
                    line, f"{c} took part in round {rnd.index} but is neither survivor nor dropped"
                )
        return survivors

    def _check_outcome(
        self, line: int, st: dict[str, Any], survivors: list[str], rnd: _Round
    ) -> None:
        if st["outcome"] == "aborted":
            if st["aggregate"] is not None or st["reason"] is None or survivors:
                self.fail(
                    line, "an aborted round must name a reason, no aggregate and no survivors"
                )
            return
        if st["outcome"] != "aggregated" or not HEX64.fullmatch(st["aggregate"] or ""):
            self.fail(line, "outcome must be 'aggregated' with an aggregate digest, or 'aborted'")
            return
        if self.protocol is None or self.roster is None:
            return
        agg = self.roster.aggregator_id
        n = len(survivors) + len(st["dropped"])
        try:
            threshold = self.protocol.threshold(n)
        except (ProtocolError, ValueError, ArithmeticError) as exc:
            self.fail(line, f"the protocol has no threshold for {n} clients: {exc}")
            return
        if len(survivors) < threshold:
            self.fail(line, f"{len(survivors)} survivors is below the protocol's threshold")
        for spec in self.protocol.stages:
            for c in survivors:
                key = (spec.name, c, agg) if spec.sender == "client" else (spec.name, agg, c)
                if key not in rnd.seen:
                    self.fail(line, f"survivor {c} has no {spec.name} message in round {rnd.index}")

    def _check_cosigs(
        self, line: int, cosigs: list[Any], st: dict[str, Any], survivors: list[str]
    ) -> None:
        expected_statement = statement_digest(st)
        signers = []
        for cosig in cosigs:
            if not shape_ok(cosig, COSIG_FIELDS):
                self.fail(line, "malformed co-signature")
                continue
            signers.append(cosig["signer"])
            if cosig["statement"] != expected_statement:
                self.fail(line, f"{cosig['signer']} co-signed a different statement")
            self._signed(line, cosig["signer"], cosig, COSIG_DOMAIN, cosig_digest(cosig))
        for c in sorted(set(survivors) - set(signers)):
            self.fail(line, f"survivor {c} did not co-sign the close of round {st['round']}")
        for c in sorted(set(signers) - set(survivors)):
            self.fail(line, f"{c} co-signed round {st['round']} but is not a listed survivor")
        if len(signers) != len(set(signers)):
            self.fail(line, "a survivor co-signed twice")

    def _aggregator_record(self, line: int, rec: dict[str, Any], digest: str) -> None:
        if self.roster is not None and rec["sender"] != self.roster.aggregator_id:
            self.fail(line, f"{rec['kind']} record written by {rec['sender']}, not the aggregator")
        self._signed(line, rec["sender"], rec, RECORD_DOMAIN, digest)

    def _signed(
        self, line: int, party: str, obj: dict[str, Any], domain: bytes, digest: str
    ) -> None:
        """Check one signed item: its place in `party`'s chain, then its signature."""
        head = self.heads.get(party)
        want_seq, want_prev = (0, None) if head is None else (head[0] + 1, head[1])
        if obj["seq"] != want_seq:
            self.fail(
                line, f"{party}: sequence number {obj['seq']}, expected {want_seq} (gap or reorder)"
            )
        elif obj["prev"] != want_prev:
            self.fail(line, f"{party}: prev digest does not chain to its previous record")
        self.heads[party] = (obj["seq"], digest)
        if self.roster is None:
            return
        if party not in self.roster:
            self.fail(line, f"{party!r} is not in the session's roster")
        elif not self._signature_ok(party, obj, domain):
            self.fail(line, f"invalid signature by {party}")

    def _signature_ok(self, party: str, obj: dict[str, Any], domain: bytes) -> bool:
        return (
            self.roster is not None
            and party in self.roster
            and isinstance(obj.get("sig"), str)
            and HEX128.fullmatch(obj["sig"]) is not None
            and verify_signature(
                public_key=self.roster.public_key(party),
                message=domain + unsigned_bytes(obj),
                signature=bytes.fromhex(obj["sig"]),
            )
        )


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")
