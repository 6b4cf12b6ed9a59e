"""One round of any protocol, driven from the aggregator's side over a transport.

The engine is what every deployment shares: the stage loop; dropping a client
that its transport could not reach, or whose message did not arrive intact, before
the protocol takes the stage (the protocol recovers above its threshold and
aborts below it); recording the aggregator's own messages; and the round close:
survivors co-sign it, one that does not is dropped and the close is asked again,
and a round that cannot release is closed as aborted.

A `Transport` is what differs between deployments: how a client's message is
produced and carried and who signs its record (`collect`), how the aggregator's
messages reach clients (`deliver`), which clients it knows are gone before a
server stage (`unreachable`) and how survivors co-sign a close (`cosign_close`).
`protocols.driver` holds the in-process transport (every client's state in this
process, one writer signing for all); `securediff.flower.driver` the remote one
(requests and replies, each client signing on its own machine).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from protocols.errors import ProtocolAbort
from protocols.messages import Message, encode
from protocols.stages import AggregationProtocol, RandomBytes, RoundSetup, ServerState
from protocols.transcript import TranscriptWriter


@dataclass(frozen=True)
class RoundResult:
    """sum_i w_i v_i and sum_i w_i over the contributors; the caller divides.

    `survivors` finished the round; `contributors` are whose inputs the sum holds
    (a client that drops after a protocol fixed its sum is dropped but still in it).
    """

    weighted_sum: np.ndarray
    total_weight: float
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    contributors: tuple[str, ...]
    bytes_up: int
    bytes_down: int
    stats: dict[str, Any]


@dataclass
class RoundLog:
    """The round's transcript (None: not recorded) and the traffic it carried."""

    round_index: int
    transcript: TranscriptWriter | None
    bytes_up: int = 0
    bytes_down: int = 0
    by_stage: dict[str, int] = field(default_factory=dict)
    messages: int = 0

    def post(self, stage: str, msg: Message, *, up: bool) -> bytes:
        """Encode `msg`, record it signed by its sender (the writer must hold that
        key) and count it; the bytes to carry."""
        data = encode(msg)
        if self.transcript is not None:
            self.transcript.record_message(
                round_index=self.round_index, stage=stage, message_type=msg.TYPE_NAME,
                sender=msg.sender, receiver=msg.receiver, payload=data, message=msg)
        self.count(stage, len(data), up=up)
        return data

    def count(self, stage: str, size: int, *, up: bool) -> None:
        self.messages += 1
        self.by_stage[stage] = self.by_stage.get(stage, 0) + size
        if up:
            self.bytes_up += size
        else:
            self.bytes_down += size


class Transport(Protocol):
    def start(self, setup: RoundSetup, log: RoundLog, random_bytes: RandomBytes) -> None:
        """Open the round (called once, after the aggregator's own start)."""

    def collect(self, stage: str, active: Sequence[str]) -> tuple[list[Message], dict[str, str]]:
        """Client stage: the messages that arrived intact (their records written),
        and why each client that failed the stage is to be dropped."""

    def unreachable(self, stage: str) -> Mapping[str, str]:
        """Clients known to be gone before server stage `stage`, and why."""

    def deliver(self, stage: str, sent: Iterator[tuple[Message, bytes]],
                active: Sequence[str]) -> None:
        """Server stage: carry the aggregator's messages to `active` clients. Each
        item is recorded as it is drawn from `sent`, so what a transport never
        carried (it aborted first) is not in the transcript."""

    def cosign_close(self, statement: Mapping[str, Any], records: list[str]) -> dict[str, str]:
        """Have the statement's survivors co-sign it and write the close; or write
        nothing and name the survivors that did not co-sign, and why."""


def drive_round(
    protocol: AggregationProtocol,
    setup: RoundSetup,
    transport: Transport,
    *,
    transcript: TranscriptWriter | None,
    random_bytes: RandomBytes,
) -> RoundResult:
    """Run every stage of `protocol` for `setup` over `transport`; `ProtocolAbort`
    (after an aborted round_close) when the round cannot release an aggregate."""
    log = RoundLog(round_index=setup.round_index, transcript=transcript)
    server = protocol.server_start(setup=setup, random_bytes=random_bytes)
    transport.start(setup, log, random_bytes)
    try:
        if server.aborted is not None:
            raise ProtocolAbort(server.aborted)
        for spec in protocol.stages:
            if spec.sender == "client":
                delivered, bad = transport.collect(spec.name, server.active)
                server = protocol.server_drop(server, bad)
                server, _ = protocol.server_step(spec.name, server, delivered)
            else:
                server = protocol.server_drop(server, transport.unreachable(spec.name))
                server, out = protocol.server_step(spec.name, server, ())
                transport.deliver(spec.name, _posted(log, spec.name, out), server.active)
            if server.aborted is not None:
                raise ProtocolAbort(server.aborted)
        aggregate = protocol.server_result(server)
        survivors, dropped = _close(transport, transcript, server, aggregate.digest())
    except ProtocolAbort as exc:
        if transcript is not None:
            close_aborted(transcript, setup.round_index, setup.participants, str(exc),
                          dict(server.dropped))
        raise
    return RoundResult(
        weighted_sum=aggregate.weighted_sum,
        total_weight=aggregate.total_weight,
        survivors=tuple(sorted(survivors)),
        dropped=tuple(sorted(c for c, _ in dropped)),
        contributors=tuple(sorted(protocol.contributors(server))),
        bytes_up=log.bytes_up,
        bytes_down=log.bytes_down,
        stats={
            "messages": log.messages,
            "bytes_by_stage": dict(log.by_stage),
            "drop_reasons": dict(dropped),
            "ignored": [list(item) for item in server.ignored],
            "threshold": setup.threshold,
            "aggregate_digest": aggregate.digest(),
            "protocol": protocol.round_stats(server),
        },
    )


def close_aborted(
    transcript: TranscriptWriter, round_index: int, participants: Sequence[str], reason: str,
    why: Mapping[str, str] | None = None,
) -> None:
    """Close a round that releases nothing: no survivor is left to co-sign it, and
    every participant is listed with why it was dropped (`why`, where known)."""
    why = why or {}
    transcript.close_round(
        round_index=round_index, survivors=(),
        dropped=[(c, why.get(c, "in the round when it aborted")) for c in participants],
        aggregate_digest=None, client_views={}, reason=reason)


def _posted(log: RoundLog, stage: str, out: Sequence[Message]) -> Iterator[tuple[Message, bytes]]:
    for msg in out:
        yield msg, log.post(stage, msg, up=False)


def _close(
    transport: Transport, transcript: TranscriptWriter | None, server: ServerState,
    aggregate_digest: str,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Close the round with every survivor's co-signature; a survivor that gives
    none is dropped (it left after the sum was fixed, so it stays a contributor)
    and the rest are asked again, down to the threshold."""
    setup = server.setup
    survivors, dropped = list(server.active), list(server.dropped)
    if transcript is None:
        return survivors, dropped
    while True:
        statement, records = transcript.round_statement(
            round_index=setup.round_index, survivors=survivors, dropped=dropped,
            aggregate_digest=aggregate_digest)
        lost = transport.cosign_close(statement, records)
        if not lost:
            return survivors, dropped
        survivors = [c for c in survivors if c not in lost]
        dropped += sorted(lost.items())
        if len(survivors) < setup.threshold:
            raise ProtocolAbort(
                f"round {setup.round_index}: {len(survivors)} clients co-signed the close, "
                f"below the threshold of {setup.threshold}")
