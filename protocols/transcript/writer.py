"""Writing a transcript: the aggregator's file, every party's signed chain, and
each survivor's co-signature of its round's close."""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from protocols.errors import ProtocolAbort, TranscriptError
from protocols.hazmat.signing import SigningKey
from protocols.messages import Message, canonical_json, sha256_hex
from protocols.roster import Identities
from protocols.stages import AggregationProtocol
from protocols.transcript.format import (
    CLOSE_STAGE,
    COSIG_DOMAIN,
    RECORD_DOMAIN,
    TRANSCRIPT_VERSION,
    cosig_digest,
    message_meta,
    payload_dir,
    records_digest,
    statement_digest,
)


@dataclass(frozen=True)
class CloseView:
    """What a co-signer checks of one round close and what it signs, computed once
    from the statement and the record list (the survivors of an in-process round
    check the same ones: each would otherwise hash O(n) records, O(n^2) in all)."""

    statement: Mapping[str, Any]
    statement_digest: str
    records_digest: str
    records: frozenset[str]
    survivors: frozenset[str]

    @classmethod
    def of(cls, statement: Mapping[str, Any], record_digests: Sequence[str]) -> CloseView:
        return cls(statement=statement, statement_digest=statement_digest(statement),
                   records_digest=records_digest(record_digests), records=frozenset(record_digests),
                   survivors=frozenset(statement["survivors"]))


def cosign_statement(
    *,
    statement: Mapping[str, Any],
    record_digests: Sequence[str],
    own_digests: Collection[str],
    own_aggregate_digest: str | None,
    client_id: str,
    key: SigningKey,
    seq: int,
    prev: str | None,
) -> dict[str, Any]:
    """A survivor's side of the round close: check the statement against what the
    client itself saw, then sign it as the next item of its own chain."""
    return cosign_view(CloseView.of(statement, record_digests), own_digests=own_digests,
                       own_aggregate_digest=own_aggregate_digest, client_id=client_id, key=key,
                       seq=seq, prev=prev)


def cosign_view(
    view: CloseView,
    *,
    own_digests: Collection[str],
    own_aggregate_digest: str | None,
    client_id: str,
    key: SigningKey,
    seq: int,
    prev: str | None,
) -> dict[str, Any]:
    """`cosign_statement` on a close view (the statement and list checked once)."""
    statement = view.statement
    if client_id not in view.survivors:
        raise ProtocolAbort(f"{client_id} was asked to co-sign a round it is not a survivor of")
    if statement["records_digest"] != view.records_digest:
        raise ProtocolAbort(f"{client_id}: the record list does not match the statement")
    if not view.records.issuperset(own_digests):
        raise ProtocolAbort(f"{client_id}: the round's record list leaves out its own messages")
    if own_aggregate_digest is not None and statement["aggregate"] != own_aggregate_digest:
        raise ProtocolAbort(f"{client_id}: the statement names an aggregate it did not receive")
    entry: dict[str, Any] = {
        "signer": client_id,
        "seq": seq,
        "prev": prev,
        "statement": view.statement_digest,
    }
    entry["sig"] = key.sign(COSIG_DOMAIN + canonical_json(entry)).hex()
    return entry


def store_payload(directory: Path, digest: str, payload: bytes) -> None:
    target = directory / digest
    if not target.exists():
        tmp = directory / f".{digest}.tmp"
        tmp.write_bytes(payload)
        os.replace(tmp, target)


@dataclass
class _OpenRound:
    index: int
    digests: list[str] = field(default_factory=list)
    touched: dict[str, list[str]] = field(default_factory=dict)


class TranscriptWriter:
    """Appends a session to a transcript file, signing for every party in memory."""

    def __init__(
        self,
        fh: BinaryIO,
        *,
        path: Path,
        identities: Identities,
        protocol: AggregationProtocol,
        heads: dict[str, tuple[int, str]],
        session: int,
        store_payloads: bool = False,
    ) -> None:
        self._fh = fh
        self.path = path
        self.identities = identities
        self.protocol = protocol
        self.protocol_name = protocol.name
        self.payload_dir = payload_dir(path) if store_payloads else None
        self.roster_digest = identities.roster().digest
        self.session = session
        self._heads = heads
        self._round: _OpenRound | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        identities: Identities,
        protocol: AggregationProtocol,
        store_payloads: bool = False,
        planned_rounds: tuple[int, int] | None = None,
    ) -> TranscriptWriter:
        """Start a new session at the end of `path` (created if missing): a resumed run
        appends here, and every party's chain continues from the existing records.
        `planned_rounds` = (first, end) are the round indices this session means to
        close; the header records them, and since every later record of the
        aggregator chains back to the header and the survivors co-sign those
        records, a transcript cut after a whole round is caught without outside
        knowledge (when the session is the last one).
        With `store_payloads`, every message's bytes are kept beside the transcript so
        that a reviewer can replay the rounds (large: one copy of everything sent)."""
        path = Path(path)
        heads, sessions = _scan_existing(path)
        if store_payloads:
            payload_dir(path).mkdir(exist_ok=True)
        writer = cls(
            open(path, "ab"),  # closed by close()
            path=path,
            identities=identities,
            protocol=protocol,
            heads=heads,
            session=sessions,
            store_payloads=store_payloads,
        )
        writer._write(
            {
                "kind": "header",
                "session": sessions,
                "protocol": protocol.name,
                "params": protocol.params,
                "roster": writer.roster_digest,
                "rounds": None if planned_rounds is None else [int(r) for r in planned_rounds],
            },
            identities.aggregator_id,
        )
        return writer

    def __enter__(self) -> TranscriptWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def _next(self, party: str) -> tuple[int, str | None]:
        head = self._heads.get(party)
        return (0, None) if head is None else (head[0] + 1, head[1])

    def _write(self, record: dict[str, Any], party: str) -> str:
        seq, prev = self._next(party)
        rec = {**record, "v": TRANSCRIPT_VERSION, "sender": party, "seq": seq, "prev": prev}
        rec["sig"] = (
            self.identities.signing_key(party).sign(RECORD_DOMAIN + canonical_json(rec)).hex()
        )
        line = canonical_json(rec)
        self._fh.write(line + b"\n")
        self._fh.flush()
        digest = sha256_hex(line)
        self._heads[party] = (seq, digest)
        return digest

    def _open_round(self, round_index: int) -> _OpenRound:
        if self._round is None:
            self._round = _OpenRound(index=round_index)
        elif self._round.index != round_index:
            raise TranscriptError(f"round {self._round.index} is still open")
        return self._round

    def record_message(
        self,
        *,
        round_index: int,
        stage: str,
        message_type: str,
        sender: str,
        receiver: str,
        payload: bytes,
        message: Message | None = None,
    ) -> str:
        """Record one message (signed by its sender); returns the record's digest.
        `message`, when the caller holds it, is what `payload` decodes to (the
        caller encoded it): its facts are read from it instead of decoding again."""
        rnd = self._open_round(round_index)
        payload_digest = sha256_hex(payload)
        if self.payload_dir is not None:
            store_payload(self.payload_dir, payload_digest, payload)
        digest = self._write(
            {
                "kind": "message",
                "session": self.session,
                "round": round_index,
                "stage": stage,
                "type": message_type,
                "receiver": receiver,
                "payload_sha256": payload_digest,
                "payload_size": len(payload),
                "meta": message_meta(self.protocol, payload, message),
            },
            sender,
        )
        rnd.digests.append(digest)
        for party in (sender, receiver):
            rnd.touched.setdefault(party, []).append(digest)
        return digest

    def round_statement(
        self,
        *,
        round_index: int,
        survivors: Sequence[str],
        dropped: Sequence[tuple[str, str]],
        aggregate_digest: str | None,
        reason: str | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """The close statement survivors are asked to co-sign, and the record list it
        names: aggregated when `aggregate_digest` is given, else aborted with `reason`.
        Built here only, for the in-process co-signers and the remote ones alike."""
        rnd = self._open_round(round_index)
        statement = {
            "v": TRANSCRIPT_VERSION,
            "outcome": "aggregated" if aggregate_digest is not None else "aborted",
            "protocol": self.protocol_name,
            "roster": self.roster_digest,
            "session": self.session,
            "round": round_index,
            "survivors": sorted(survivors),
            "dropped": [[c, why] for c, why in sorted(dropped)],
            "records_digest": records_digest(rnd.digests),
            "aggregate": aggregate_digest,
            "reason": reason,
        }
        return statement, list(rnd.digests)

    def close_round(
        self,
        *,
        round_index: int,
        survivors: Sequence[str],
        dropped: Sequence[tuple[str, str]],
        aggregate_digest: str | None,
        client_views: Mapping[str, str | None],
        reason: str | None = None,
    ) -> str:
        """Write the round's close: aggregated when `aggregate_digest` is given, else
        aborted with `reason`. Every survivor co-signs; `client_views` holds the
        aggregate digest each survivor saw itself (None where it saw none)."""
        statement, record_digests = self.round_statement(
            round_index=round_index, survivors=survivors, dropped=dropped,
            aggregate_digest=aggregate_digest, reason=reason,
        )
        return self.cosign_and_close(statement, record_digests, client_views)

    def cosign_and_close(
        self,
        statement: Mapping[str, Any],
        record_digests: Sequence[str],
        client_views: Mapping[str, str | None],
    ) -> str:
        """Co-sign `statement` for each of its survivors (this writer holds their keys)
        and write the close; `ProtocolAbort` if a survivor would refuse it."""
        rnd = self._open_round(statement["round"])
        cosigs = []
        signed: dict[str, tuple[int, str]] = {}
        view = CloseView.of(statement, record_digests)
        for cid in statement["survivors"]:
            seq, prev = self._next(cid)
            entry = cosign_view(
                view,
                own_digests=rnd.touched.get(cid, ()),
                own_aggregate_digest=client_views.get(cid),
                client_id=cid,
                key=self.identities.signing_key(cid),
                seq=seq,
                prev=prev,
            )
            cosigs.append(entry)
            signed[cid] = (seq, cosig_digest(entry))
        return self._write_close(statement, cosigs, signed)

    def _write_close(
        self,
        statement: Mapping[str, Any],
        cosigs: list[dict[str, Any]],
        heads: Mapping[str, tuple[int, str]],
    ) -> str:
        """Write the round_close record of `statement` with every survivor's co-signature;
        the survivors' chains advance (to `heads`) only now that all of them signed."""
        rnd = self._open_round(statement["round"])
        record = {
            "kind": "round_close",
            "session": self.session,
            "round": statement["round"],
            "stage": CLOSE_STAGE,
            "statement": dict(statement),
            "records": list(rnd.digests),
            "cosigs": cosigs,
        }
        self._heads.update(heads)
        digest = self._write(record, self.identities.aggregator_id)
        os.fsync(self._fh.fileno())
        self._round = None
        return digest


def last_round_index(path: str | os.PathLike[str]) -> int:
    """The highest round index any record of the transcript names (-1 if none): a
    resumed session starts above it, so that no round index is used twice."""
    path = Path(path)
    if not path.exists():
        return -1
    last = -1
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                index = json.loads(raw).get("round")
            except (ValueError, AttributeError):
                continue
            if type(index) is int:
                last = max(last, index)
    return last


def _scan_existing(path: Path) -> tuple[dict[str, tuple[int, str]], int]:
    """Chain heads and session count of an existing transcript, for appending."""
    heads: dict[str, tuple[int, str]] = {}
    sessions = 0
    if not path.exists() or path.stat().st_size == 0:
        return heads, sessions
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                raise TranscriptError(
                    f"{path}:{lineno}: incomplete last line; repair before resuming"
                )
            body = raw[:-1]
            try:
                rec = json.loads(body)
                if rec["kind"] == "round_close":
                    for cosig in rec["cosigs"]:
                        heads[cosig["signer"]] = (cosig["seq"], cosig_digest(cosig))
                sessions += rec["kind"] == "header"
                heads[rec["sender"]] = (rec["seq"], sha256_hex(body))
            except (ValueError, KeyError, TypeError) as exc:
                raise TranscriptError(f"{path}:{lineno}: not a transcript record ({exc})") from None
    return heads, sessions
