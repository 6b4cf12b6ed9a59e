"""The aggregator's round driver when every client is on its own machine.

The same stages as `protocols.driver.run_round`, with two differences: messages
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from protocols.driver import RoundResult
from protocols.errors import MessageDecodeError, ProtocolAbort, TranscriptError
from protocols.messages import decode, encode
from protocols.remote import PartyIdentities, SignedRecordWriter
from protocols.stages import AggregationProtocol, RandomBytes, VectorSpec, make_setup
from securediff.flower.exchange import Reply, Request, head_fields, setup_json

# {client id: request} -> {client id: reply}; a client missing from the answer is lost.
Exchange = Callable[[Mapping[str, Request]], Mapping[str, Reply]]


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
    head = setup_json(protocol, setup)
    common = {"round": round_index, "session": transcript.session, "setup": head}
    server = protocol.server_start(setup=setup, random_bytes=random_bytes or os.urandom)
    pending: dict[str, list[tuple[str, bytes]]] = {c: [] for c in setup.participants}
    up = down = 0
    try:
        if server.aborted is not None:
            raise ProtocolAbort(server.aborted)
        for spec in protocol.stages:
            if spec.sender == "server":
                server, out = protocol.server_step(spec.name, server, ())
                sent = {}
                for msg in out:
                    data = encode(msg)
                    transcript.record_message(
                        round_index=round_index, stage=spec.name, message_type=msg.TYPE_NAME,
                        sender=msg.sender, receiver=msg.receiver, payload=data)
                    sent[msg.receiver] = data
                    down += len(data)
                for cid in server.active:
                    pending[cid].append((spec.name, sent.get(cid, b"")))
            else:
                requests = {
                    cid: {**common, **_deliver(pending[cid]), **head_fields(transcript.head_of(cid)),
                          "kind": "step", "stage": spec.name}
                    for cid in server.active
                }
                replies = exchange(requests)
                delivered, bad = [], {}
                for cid in server.active:
                    pending[cid] = []
                    msg, why = _take_reply(transcript, cid, spec.name, replies.get(cid))
                    if msg is None:
                        bad[cid] = why
                    else:
                        delivered.append(msg)
                        up += replies[cid]["payload"].__len__()
                server = protocol.server_drop(server, bad)
                server, _ = protocol.server_step(spec.name, server, delivered)
            if server.aborted is not None:
                raise ProtocolAbort(server.aborted)
        aggregate = protocol.server_result(server)
        dropped = list(server.dropped)
        survivors = list(server.active)
        while True:
            statement, records = transcript.round_statement(
                round_index=round_index, survivors=survivors, dropped=dropped,
                aggregate_digest=aggregate.digest())
            requests = {
                cid: {**common, **_deliver(pending[cid]), **head_fields(transcript.head_of(cid)),
                      "kind": "close", "statement": json.dumps(statement), "records": records}
                for cid in survivors
            }
            replies = exchange(requests)
            cosigs = {cid: _cosig(replies.get(cid)) for cid in survivors}
            lost = {cid: "no co-signature of the round close" for cid, c in cosigs.items() if c is None}
            if not lost:
                try:
                    transcript.close_with_cosigs(statement, cosigs)
                    break
                except ProtocolAbort as exc:
                    lost = {cid: str(exc) for cid in survivors if str(exc).startswith(cid + ":")}
                    if not lost:
                        raise
            survivors = [c for c in survivors if c not in lost]
            dropped += sorted(lost.items())
            for cid in lost:
                pending.pop(cid, None)
            for cid in survivors:
                pending[cid] = []  # delivered with the first close request
            if len(survivors) < setup.threshold:
                raise ProtocolAbort(
                    f"round {round_index}: {len(survivors)} clients co-signed the close, "
                    f"below the threshold of {setup.threshold}")
    except ProtocolAbort as exc:
        why = dict(server.dropped)
        statement, _ = transcript.round_statement(
            round_index=round_index, survivors=(),
            dropped=[(c, why.get(c, "in the round when it aborted")) for c in setup.participants],
            aggregate_digest=None, reason=str(exc))
        transcript.close_with_cosigs(statement, {})
        raise
    result_dropped = tuple(sorted(c for c, _ in dropped))
    return RoundResult(
        weighted_sum=aggregate.weighted_sum,
        total_weight=aggregate.total_weight,
        survivors=tuple(sorted(survivors)),
        dropped=result_dropped,
        contributors=tuple(sorted(protocol.contributors(server))),
        bytes_up=up,
        bytes_down=down,
        stats={"drop_reasons": dict(dropped), "threshold": setup.threshold,
               "aggregate_digest": aggregate.digest(),
               "protocol": protocol.round_stats(server)},
    )


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
