"""The in-process transport: every client's state lives in this process.

Every message is encoded to its canonical bytes, recorded in the transcript
(signed by its sender: the writer holds every key) and decoded again before
delivery, exactly as a network transport would carry it, so the in-process
simulation exercises the same bytes a Flower deployment would. The stage loop,
dropouts and the round close are `protocols.engine`'s, shared with the remote
transport. The federation loop calls only `run_round`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from protocols.engine import RoundLog, RoundResult, drive_round
from protocols.errors import MessageDecodeError, ProtocolAbort, ProtocolError, ProtocolInputError
from protocols.messages import Message, decode
from protocols.roster import Identities
from protocols.stages import (
    AggregationProtocol,
    ClientInput,
    ClientState,
    RandomBytes,
    RoundSetup,
    VectorSpec,
    make_setup,
)
from protocols.transcript import TranscriptWriter

__all__ = ["InProcessTransport", "RoundResult", "check_against_plain", "default_binding",
           "run_round"]

Tap = Callable[[str, bytes], bytes]


class InProcessTransport:
    """Clients as live states, stepped here; a planned dropout is known in advance.

    Every client the plan has not removed takes every stage, dropped by the
    aggregator or not: a client does not learn that it was dropped, and the
    aggregator ignores what it sends (the protocol lists it as ignored)."""

    def __init__(self, protocol: AggregationProtocol, inputs: Mapping[str, ClientInput],
                 plan: Mapping[str, str], tap: Tap | None) -> None:
        self.protocol = protocol
        self.inputs = inputs
        self.plan = plan
        self.tap = tap
        self.gone: set[str] = set()

    def start(self, setup: RoundSetup, log: RoundLog, random_bytes: RandomBytes) -> None:
        self.setup, self.log = setup, log
        self.clients: dict[str, ClientState] = {
            c: self.protocol.client_start(setup=setup, client_id=c, client_input=self.inputs[c],
                                          random_bytes=random_bytes)
            for c in setup.participants
        }

    def _here(self, stage: str) -> list[str]:
        """The clients still connected once the plan's dropouts before `stage` left."""
        self.gone |= {c for c, before in self.plan.items() if before == stage}
        return [c for c in self.setup.participants if c not in self.gone]

    def _carry(self, stage: str, data: bytes) -> Message:
        return decode(self.tap(stage, data) if self.tap is not None else data)

    def collect(self, stage: str, active: Sequence[str]) -> tuple[list[Message], dict[str, str]]:
        delivered, bad = [], {}
        for cid in self._here(stage):
            self.clients[cid], out = self.protocol.client_step(stage, self.clients[cid], ())
            for msg in out:
                data = self.log.post(stage, msg, up=True)
                try:
                    got = self._carry(stage, data)
                except MessageDecodeError:
                    bad[cid] = f"undecodable message in {stage}"
                    continue
                if got.sender != cid:  # the channel authenticates the sender
                    bad[cid] = f"message claims to come from {got.sender}"
                else:
                    delivered.append(got)
        return delivered, bad

    def unreachable(self, stage: str) -> dict[str, str]:
        self._here(stage)
        return {c: f"unreachable before {stage}" for c in self.gone}

    def deliver(self, stage: str, sent: Iterator[tuple[Message, bytes]],
                active: Sequence[str]) -> None:
        inbox: dict[str, list[Message]] = {}
        for msg, data in sent:
            try:
                got = self._carry(stage, data)
            except MessageDecodeError:
                raise ProtocolAbort(f"{msg.receiver} got an undecodable message") from None
            inbox.setdefault(msg.receiver, []).append(got)
        for cid in self.setup.participants:
            if cid not in self.gone:
                self.clients[cid], _ = self.protocol.client_step(
                    stage, self.clients[cid], inbox.get(cid, []))

    def cosign_close(self, statement: Mapping[str, Any], records: list[str]) -> dict[str, str]:
        """Each survivor checks the close against the aggregate it saw itself; the
        writer signs for it (a refusal aborts the round: no honest client refuses)."""
        views = {c: self.protocol.client_aggregate_digest(self.clients[c])
                 for c in statement["survivors"]}
        if self.log.transcript is None:  # the engine closes only a recorded round
            raise ProtocolError("a round without a transcript has no close to co-sign")
        self.log.transcript.cosign_and_close(statement, records, views)
        return {}


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
    return drive_round(
        protocol, setup, InProcessTransport(protocol, inputs, plan, tap), transcript=transcript,
        random_bytes=random_bytes if random_bytes is not None else os.urandom,
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
