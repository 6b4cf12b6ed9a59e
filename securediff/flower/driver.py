"""The aggregator's round driver when every client is on its own machine.

The round engine of `protocols.engine` (the same one `protocols.driver.run_round`
drives in process) over a remote transport. The differences: messages
reach clients through `exchange` (one request per reachable client, replies
within a timeout; Flower in `apps.py`, direct calls in tests), and clients sign
their own records and co-signatures. To save round trips, the server-stage
messages for a client ride with the request for its next client stage.

A client that does not answer a request in time, or answers with an error or
with something that does not verify, is dropped before that stage, exactly as a
dropout in the simulation: the protocol recovers above its threshold and the
round aborts below it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from protocols.engine import RoundLog, RoundResult, drive_round
from protocols.errors import MessageDecodeError, ProtocolAbort, TranscriptError
from protocols.messages import Message, decode
from protocols.remote import PartyIdentities, SignedRecordWriter
from protocols.stages import AggregationProtocol, RandomBytes, RoundSetup, VectorSpec, make_setup
from securediff.flower.exchange import Reply, Request, head_fields, setup_json

# {client id: request} -> {client id: reply}; a client missing from the answer is lost.
Exchange = Callable[[Mapping[str, Request]], Mapping[str, Reply]]


class RemoteTransport:
    """Clients behind `exchange`: asked only at client stages and at the close.

    A server-stage message waits for its client's next request; the transport
    learns that a client is gone only when it asks it (nothing is `unreachable`
    before a server stage). Each client signs its records and co-signature on
    its own machine; they are checked against the roster before they are written."""

    def __init__(self, protocol: AggregationProtocol, transcript: SignedRecordWriter,
                 exchange: Exchange) -> None:
        self.protocol = protocol
        self.transcript = transcript
        self.exchange = exchange

    def start(self, setup: RoundSetup, log: RoundLog, random_bytes: RandomBytes) -> None:
        self.log = log
        self.common = {"round": setup.round_index, "session": self.transcript.session,
                       "setup": setup_json(self.protocol, setup)}
        # Server-stage payloads per client (empty bytes: none for it), sent with its next request.
        self.pending: dict[str, list[tuple[str, bytes]]] = {c: [] for c in setup.participants}

    def _request(self, cid: str, **fields: Any) -> Request:
        return {**self.common, **_deliver(self.pending[cid]),
                **head_fields(self.transcript.head_of(cid)), **fields}

    def collect(self, stage: str, active: Sequence[str]) -> tuple[list[Message], dict[str, str]]:
        replies = self.exchange({cid: self._request(cid, kind="step", stage=stage)
                                 for cid in active})
        delivered, bad = [], {}
        for cid in active:
            self.pending[cid] = []
            msg, why = _take_reply(self.transcript, cid, stage, replies.get(cid))
            if msg is None:
                bad[cid] = why
            else:
                delivered.append(msg)
                self.log.count(stage, len(replies[cid]["payload"]), up=True)
        return delivered, bad

    def unreachable(self, stage: str) -> dict[str, str]:
        return {}

    def deliver(self, stage: str, sent: Iterator[tuple[Message, bytes]],
                active: Sequence[str]) -> None:
        by_receiver = {msg.receiver: data for msg, data in sent}
        for cid in active:
            self.pending[cid].append((stage, by_receiver.get(cid, b"")))

    def cosign_close(self, statement: Mapping[str, Any], records: list[str]) -> dict[str, str]:
        survivors = statement["survivors"]
        replies = self.exchange({
            cid: self._request(cid, kind="close", statement=json.dumps(statement), records=records)
            for cid in survivors
        })
        for cid in survivors:
            self.pending[cid] = []  # delivered with this close request
        cosigs = {cid: _cosig(replies.get(cid)) for cid in survivors}
        lost = {cid: "no co-signature of the round close" for cid, c in cosigs.items() if c is None}
        if lost:
            return lost
        try:
            self.transcript.close_with_cosigs(statement, cosigs)
        except ProtocolAbort as exc:
            lost = {cid: str(exc) for cid in survivors if str(exc).startswith(cid + ":")}
            if not lost:
                raise
        return lost


def run_remote_round(
    protocol: AggregationProtocol,
    *,
    round_index: int,
    participants: Sequence[str],
    vector_spec: VectorSpec,
    identities: PartyIdentities,
    transcript: SignedRecordWriter,
    exchange: Exchange,
    random_bytes: RandomBytes | None = None,
    binding: str = "",
) -> RoundResult:
    """Run one round with remote clients; `ProtocolAbort` (after an aborted close)
    when it cannot release an aggregate. `binding` names the run and session."""
    setup = make_setup(protocol, round_index=round_index, aggregator_id=identities.aggregator_id,
                       participants=participants, vector=vector_spec, binding=binding)
    return drive_round(protocol, setup, RemoteTransport(protocol, transcript, exchange),
                       transcript=transcript, random_bytes=random_bytes or os.urandom)


def _deliver(items: list[tuple[str, bytes]]) -> dict[str, Any]:
    return {"deliver_stages": [s for s, _ in items], "deliver_payloads": [p for _, p in items]}


def _take_reply(transcript: SignedRecordWriter, cid: str, stage: str,
                reply: Reply | None) -> tuple[Any, str]:
    if reply is None:
        return None, f"no reply in {stage} (node lost or timed out)"
    if "error" in reply:
        return None, f"failed in {stage}: {reply['error']}"[:300]
    try:
        payload = bytes(reply["payload"])
        msg = decode(payload)
        if msg.sender != cid:  # the node's roster key authenticates it (hello)
            return None, f"message claims to come from {msg.sender}"
        transcript.record_signed_message(json.loads(reply["record"]), payload)
    except (KeyError, TypeError, ValueError, MessageDecodeError, TranscriptError) as exc:
        return None, f"unusable reply in {stage}: {exc}"[:300]
    return msg, ""


def _cosig(reply: Reply | None) -> dict[str, Any] | None:
    if reply is None or "cosig" not in reply:
        return None
    try:
        cosig = json.loads(reply["cosig"])
    except (TypeError, ValueError):
        return None
    return cosig if isinstance(cosig, dict) else None
