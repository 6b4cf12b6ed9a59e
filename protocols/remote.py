"""Transcripts for transports on which every party holds only its own key.

In the in-process simulation one `TranscriptWriter` signs for every party. Across
machines (Flower) a client signs its own records and co-signatures on its own
machine and sends them with its message; the aggregator checks each against the
pinned roster and the client's chain before writing it. The file is
byte-for-byte the format `verify_transcript` reads: the same records, the same
chains, the same co-signed round closes.

- `PartyIdentities`: one party's signing key plus the roster (what a party holds).
- `PartyChain`: a client's side: sign its message records and its co-signature.
- `SignedRecordWriter`: the aggregator's side: write client-signed records and
  close rounds with co-signatures collected over the network.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocols.errors import ProtocolAbort, RosterError, TranscriptError
from protocols.hazmat.signing import SigningKey, verify_signature
from protocols.messages import canonical_json, sha256_hex
from protocols.roster import Identities, Roster
from protocols.stages import AggregationProtocol
from protocols.transcript import (
    COSIG_DOMAIN,
    RECORD_DOMAIN,
    TRANSCRIPT_VERSION,
    TranscriptWriter,
    cosig_digest,
    cosign_statement,
    message_meta,
    records_digest,
    statement_digest,
    store_payload,
)


class PartyIdentities(Identities):
    """The roster's public keys and this party's own private key, nothing else.

    Duck-compatible with `Identities` where a protocol or writer asks for the
    roster, the ids, or the key of the party itself; asking for anyone else's
    key raises `RosterError`."""

    def __init__(self, roster: Roster, *, party: str, key: SigningKey) -> None:
        if party not in roster or roster.public_key(party) != key.public_key:
            raise RosterError(f"the key given for {party!r} is not the one the roster pins")
        self._keys = {party: key}
        self.aggregator_id = roster.aggregator_id
        self._roster = roster
        self.party = party


def message_record(
    *,
    session: int,
    round_index: int,
    stage: str,
    message_type: str,
    receiver: str,
    payload: bytes,
    meta: dict[str, Any] | None,
) -> dict[str, Any]:
    """The unsigned body of a message record, exactly as `TranscriptWriter` writes it."""
    return {
        "kind": "message",
        "session": session,
        "round": round_index,
        "stage": stage,
        "type": message_type,
        "receiver": receiver,
        "payload_sha256": sha256_hex(payload),
        "payload_size": len(payload),
        "meta": meta,
    }


def _line_digest(rec: Mapping[str, Any]) -> str:
    return sha256_hex(canonical_json(rec))


@dataclass
class PartyChain:
    """A client's own signature chain: its head is (sequence number, digest) of
    the last item it signed, or None before its first."""

    party: str
    key: SigningKey
    head: tuple[int, str] | None = None

    def _next(self) -> tuple[int, str | None]:
        return (0, None) if self.head is None else (self.head[0] + 1, self.head[1])

    def sign_message(
        self,
        *,
        protocol: AggregationProtocol,
        session: int,
        round_index: int,
        stage: str,
        message_type: str,
        receiver: str,
        payload: bytes,
    ) -> dict[str, Any]:
        """The signed record of one message this party sends; advances the chain."""
        seq, prev = self._next()
        body = message_record(
            session=session, round_index=round_index, stage=stage, message_type=message_type,
            receiver=receiver, payload=payload, meta=message_meta(protocol, payload),
        )
        rec = {**body, "v": TRANSCRIPT_VERSION, "sender": self.party, "seq": seq, "prev": prev}
        rec["sig"] = self.key.sign(RECORD_DOMAIN + canonical_json(rec)).hex()
        self.head = (seq, _line_digest(rec))
        return rec

    def cosign(
        self,
        *,
        statement: Mapping[str, Any],
        record_digests: Sequence[str],
        own_digests: Collection[str],
        own_aggregate_digest: str | None,
    ) -> dict[str, Any]:
        """Check the round's close statement against what this party saw and sign it."""
        seq, prev = self._next()
        entry = cosign_statement(
            statement=statement, record_digests=record_digests, own_digests=own_digests,
            own_aggregate_digest=own_aggregate_digest, client_id=self.party, key=self.key,
            seq=seq, prev=prev,
        )
        self.head = (seq, cosig_digest(entry))
        return entry


class SignedRecordWriter(TranscriptWriter):
    """A `TranscriptWriter` for the aggregator alone: its own records it signs, the
    clients' records and co-signatures it checks and writes as they came."""

    def head_of(self, party: str) -> tuple[int, str] | None:
        """The chain head the transcript holds for `party` (None before its first item)."""
        return self._heads.get(party)

    def record_signed_message(self, rec: Mapping[str, Any], payload: bytes) -> str:
        """Write a client's signed record of `payload`; `TranscriptError` if the
        record is not that client's next, correctly signed record of these bytes."""
        rec = dict(rec)
        sender = rec.get("sender")
        roster = self.identities.roster()
        if not isinstance(sender, str) or sender not in roster.client_ids:
            raise TranscriptError(f"a record signed by {sender!r}, not a client of the roster")
        seq, prev = self._next(sender)
        expected = message_record(
            session=self.session, round_index=rec.get("round"), stage=rec.get("stage"),
            message_type=rec.get("type"), receiver=rec.get("receiver"), payload=payload,
            meta=message_meta(self.protocol, payload),
        )
        body = {k: v for k, v in rec.items() if k not in ("v", "sender", "seq", "prev", "sig")}
        if body != expected or rec.get("v") != TRANSCRIPT_VERSION:
            raise TranscriptError(f"{sender}: the record does not describe the bytes it came with")
        if rec.get("seq") != seq or rec.get("prev") != prev:
            raise TranscriptError(f"{sender}: the record does not continue its chain")
        sig = rec.get("sig")
        unsigned = canonical_json({k: v for k, v in rec.items() if k != "sig"})
        if not isinstance(sig, str) or not _valid_sig(roster, sender, RECORD_DOMAIN + unsigned, sig):
            raise TranscriptError(f"{sender}: invalid record signature")
        rnd = self._open_round(rec["round"])
        if self.payload_dir is not None:
            store_payload(self.payload_dir, expected["payload_sha256"], payload)
        line = canonical_json(rec)
        self._fh.write(line + b"\n")
        self._fh.flush()
        digest = sha256_hex(line)
        self._heads[sender] = (seq, digest)
        rnd.digests.append(digest)
        for party in (sender, rec["receiver"]):
            rnd.touched.setdefault(party, []).append(digest)
        return digest

    def expected_cosig_head(self, party: str) -> tuple[int, str | None]:
        return self._next(party)

    def close_with_cosigs(
        self, statement: Mapping[str, Any], cosigs: Mapping[str, Mapping[str, Any]]
    ) -> str:
        """Write the round close once every survivor of `statement` has co-signed it;
        `ProtocolAbort` if a co-signature is missing, misplaced or invalid."""
        rnd = self._open_round(statement["round"])
        if statement["records_digest"] != records_digest(rnd.digests):
            raise TranscriptError("the statement names another record list than the round's")
        roster = self.identities.roster()
        want = statement_digest(statement)
        entries, heads = [], {}
        for cid in statement["survivors"]:
            entry = dict(cosigs.get(cid) or {})
            seq, prev = self._next(cid)
            sig = entry.get("sig")
            unsigned = canonical_json({k: v for k, v in entry.items() if k != "sig"})
            if (
                set(entry) != {"signer", "seq", "prev", "statement", "sig"}
                or entry["signer"] != cid or entry["seq"] != seq or entry["prev"] != prev
                or entry["statement"] != want or not isinstance(sig, str)
                or not _valid_sig(roster, cid, COSIG_DOMAIN + unsigned, sig)
            ):
                raise ProtocolAbort(f"{cid}: no valid co-signature of the round close")
            entries.append(entry)
            heads[cid] = (seq, cosig_digest(entry))
        return self._write_close(statement, entries, heads)


def _valid_sig(roster: Roster, party: str, message: bytes, sig_hex: str) -> bool:
    try:
        signature = bytes.fromhex(sig_hex)
    except ValueError:
        return False
    return verify_signature(
        public_key=roster.public_key(party), message=message, signature=signature
    )
