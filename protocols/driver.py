"""The in-process driver: runs one round of any protocol over its pure stages.

Every message is encoded to its canonical bytes, recorded in the transcript
(signed by its sender) and decoded again before delivery, exactly as a network
transport would carry it, so the in-process simulation exercises the same
bytes a Flower deployment would. The federation loop calls only `run_round`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocols.errors import MessageDecodeError, ProtocolAbort, ProtocolError, ProtocolInputError
from protocols.messages import Message, decode, encode
from protocols.roster import Identities
from protocols.stages import (
    AggregationProtocol,
    ClientInput,
    RandomBytes,
    RoundSetup,
    ServerState,
    VectorSpec,
    make_setup,
)
from protocols.transcript import TranscriptWriter

Tap = Callable[[str, bytes], bytes]


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
class _Wire:
    """Carries messages: encode, record, optionally tamper (`tap`), decode."""

    setup: RoundSetup
    transcript: TranscriptWriter | None
    tap: Tap | None
    bytes_up: int = 0
    bytes_down: int = 0
    by_stage: dict[str, int] = field(default_factory=dict)
    messages: int = 0

    def carry(self, stage: str, msg: Message, *, up: bool) -> Message:
        data = encode(msg)
        if self.transcript is not None:
            self.transcript.record_message(
                round_index=self.setup.round_index,
                stage=stage,
                message_type=msg.TYPE_NAME,
                sender=msg.sender,
                receiver=msg.receiver,
                payload=data,
                message=msg,
            )
        self.messages += 1
        self.by_stage[stage] = self.by_stage.get(stage, 0) + len(data)
        if up:
            self.bytes_up += len(data)
        else:
            self.bytes_down += len(data)
        return decode(self.tap(stage, data) if self.tap is not None else data)


def run_round(
    protocol: AggregationProtocol,
    *,
    round_index: int,
    inputs: Mapping[str, ClientInput],
    identities: Identities,
    transcript: TranscriptWriter | None,
    dropouts: Mapping[str, str] | None = None,
    vector_spec: VectorSpec | None = None,
    random_bytes: RandomBytes | None = None,
    tap: Tap | None = None,
    binding: str | None = None,
) -> RoundResult:
    """Run one round of `protocol` over `inputs` (client id -> vector and weight).

    `dropouts` maps a client to the stage before which it disappears.
    `vector_spec` is the length and dtype the aggregator expects (by default the
    one all inputs share); a client sending anything else is dropped.
    `random_bytes` feeds the protocol's own randomness (default `os.urandom`).
    `tap(stage, bytes) -> bytes` sees every message in flight after it is
    recorded and returns what is delivered: a hook to test tampering in transit.
    `binding` names the run and session (bound into signed key adverts); by default
    the transcript's session and roster.
    Raises `ProtocolAbort` (after writing an aborted round_close) when the round
    cannot release an aggregate.
    """
    if binding is None:
        binding = default_binding(transcript)
    setup, plan = _plan(
        protocol, round_index, inputs, identities, transcript, dropouts, vector_spec, binding
    )
    rb = random_bytes if random_bytes is not None else os.urandom
    wire = _Wire(setup=setup, transcript=transcript, tap=tap)
    server = protocol.server_start(setup=setup, random_bytes=rb)
    clients = {
        c: protocol.client_start(setup=setup, client_id=c, client_input=inputs[c], random_bytes=rb)
        for c in setup.participants
    }
    gone: set[str] = set()
    try:
        if server.aborted is not None:
            raise ProtocolAbort(server.aborted)
        for spec in protocol.stages:
            gone |= {c for c, stage in plan.items() if stage == spec.name}
            here = [c for c in setup.participants if c not in gone]
            if spec.sender == "client":
                delivered, bad = [], {}
                for cid in here:
                    clients[cid], out = protocol.client_step(spec.name, clients[cid], ())
                    for msg in out:
                        try:
                            got = wire.carry(spec.name, msg, up=True)
                        except MessageDecodeError:
                            bad[cid] = f"undecodable message in {spec.name}"
                            continue
                        if got.sender != cid:  # the channel authenticates the sender
                            bad[cid] = f"message claims to come from {got.sender}"
                        else:
                            delivered.append(got)
                server = protocol.server_drop(server, bad)
                server, _ = protocol.server_step(spec.name, server, delivered)
            else:
                unreachable = {c: f"unreachable before {spec.name}" for c in gone}
                server = protocol.server_drop(server, unreachable)
                server, out = protocol.server_step(spec.name, server, ())
                inbox: dict[str, list[Message]] = {}
                for msg in out:
                    try:
                        got = wire.carry(spec.name, msg, up=False)
                    except MessageDecodeError:
                        raise ProtocolAbort(f"{msg.receiver} got an undecodable message") from None
                    inbox.setdefault(msg.receiver, []).append(got)
                for cid in here:
                    clients[cid], _ = protocol.client_step(
                        spec.name, clients[cid], inbox.get(cid, [])
                    )
            if server.aborted is not None:
                raise ProtocolAbort(server.aborted)
        aggregate = protocol.server_result(server)
        if transcript is not None:
            transcript.close_round(
                round_index=round_index,
                survivors=server.active,
                dropped=server.dropped,
                aggregate_digest=aggregate.digest(),
                client_views={
                    c: protocol.client_aggregate_digest(clients[c]) for c in server.active
                },
            )
    except ProtocolAbort as exc:
        if transcript is not None:
            why = dict(server.dropped)
            transcript.close_round(
                round_index=round_index,
                survivors=(),
                dropped=[
                    (c, why.get(c, "in the round when it aborted")) for c in setup.participants
                ],
                aggregate_digest=None,
                client_views={},
                reason=str(exc),
            )
        raise
    return RoundResult(
        weighted_sum=aggregate.weighted_sum,
        total_weight=aggregate.total_weight,
        survivors=server.active,
        dropped=tuple(sorted(c for c, _ in server.dropped)),
        contributors=tuple(sorted(protocol.contributors(server))),
        bytes_up=wire.bytes_up,
        bytes_down=wire.bytes_down,
        stats=_stats(server, wire, aggregate.digest()) | {"protocol": protocol.round_stats(server)},
    )


def _plan(
    protocol: AggregationProtocol,
    round_index: int,
    inputs: Mapping[str, ClientInput],
    identities: Identities,
    transcript: TranscriptWriter | None,
    dropouts: Mapping[str, str] | None,
    vector_spec: VectorSpec | None,
    binding: str,
) -> tuple[RoundSetup, dict[str, str]]:
    if not all(isinstance(v, ClientInput) for v in inputs.values()):
        raise ProtocolInputError("inputs must map client ids to ClientInput")
    unknown = set(inputs) - set(identities.client_ids)
    if unknown:
        raise ProtocolInputError(f"clients without an identity key: {sorted(unknown)}")
    plan = dict(dropouts or {})
    stage_names = {s.name for s in protocol.stages}
    for cid, stage in plan.items():
        if cid not in inputs or stage not in stage_names:
            raise ProtocolInputError(
                f"dropout {cid!r} before {stage!r}: needs a participant and one of {sorted(stage_names)}"
            )
    if vector_spec is None:
        specs = {inp.spec for inp in inputs.values()}
        if len(specs) != 1:
            raise ProtocolInputError("inputs differ in length or dtype: pass vector_spec")
        vector_spec = specs.pop()
    if transcript is not None and (
        transcript.protocol_name != protocol.name
        or transcript.roster_digest != identities.roster().digest
    ):
        raise ProtocolInputError("the transcript was opened for another protocol or roster")
    setup = make_setup(
        protocol,
        round_index=round_index,
        aggregator_id=identities.aggregator_id,
        participants=list(inputs),
        vector=vector_spec,
        binding=binding,
    )
    return setup, plan


def default_binding(transcript: TranscriptWriter | None) -> str:
    """A transcript's session of its roster: what a round binds when the caller names
    no run (a run directory or a Flower run passes its own id)."""
    if transcript is None:
        return ""
    return f"session {transcript.session} of roster {transcript.roster_digest}"


def _stats(server: ServerState, wire: _Wire, aggregate_digest: str) -> dict[str, Any]:
    return {
        "messages": wire.messages,
        "bytes_by_stage": dict(wire.by_stage),
        "drop_reasons": dict(server.dropped),
        "ignored": [list(item) for item in server.ignored],
        "threshold": server.setup.threshold,
        "aggregate_digest": aggregate_digest,
    }


def check_against_plain(
    protocol: AggregationProtocol, inputs: Mapping[str, ClientInput], result: RoundResult
) -> dict[str, Any]:
    """Compare a released aggregate with the exact weighted sum of the same
    contributors' inputs, within the protocol's stated tolerance plus float64
    rounding. Only a simulation that holds every input can run this check; it is
    how a run shows, round by round, that blind aggregation changed nothing."""
    ids = sorted(result.contributors)
    if not ids:
        raise ProtocolError("the round released an aggregate with no contributors")
    weights = np.array([inputs[c].weight for c in ids], dtype=np.float64)
    matrix = np.stack([
        np.asarray(protocol.reference_input(inputs[c].vector), dtype=np.float64) for c in ids
    ])
    exact = weights @ matrix
    integer = all(np.issubdtype(inputs[c].vector.dtype, np.integer) for c in ids)
    max_abs = float(np.abs(exact).max(initial=0.0))
    rounding = 4 * len(ids) * np.finfo(np.float64).eps * float(
        (np.abs(weights) @ np.abs(matrix)).max(initial=0.0)
    )
    tolerance = protocol.aggregate_tolerance(
        max_abs=max_abs, clients=len(ids), total_weight=float(weights.sum()), integer=integer
    ) + rounding
    error = float(np.abs(np.asarray(result.weighted_sum, dtype=np.float64) - exact).max(initial=0.0))
    weight_error = abs(result.total_weight - math.fsum(weights))
    return {
        "contributors": ids,
        "max_abs_error": error,
        "tolerance": tolerance,
        "total_weight_error": weight_error,
        "ok": bool(error <= tolerance and weight_error <= 1e-9 * max(1.0, abs(result.total_weight))),
    }
