"""`plain`: clients send their weighted-sum ingredients in the clear.

The insecure baseline every blind protocol is compared against: one upload
(`SubmitUpdate`) and one download (`BroadcastAggregate`) per client.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.errors import ProtocolAbort, ProtocolInputError
from protocols.messages import Message, message_type
from protocols.stages import (
    Aggregate,
    AggregationProtocol,
    ClientInput,
    ClientState,
    RandomBytes,
    RoundSetup,
    ServerState,
    StageSpec,
)


@message_type(code=0x0101, name="plain.SubmitUpdate", stage="SubmitUpdate")
class SubmitUpdate(Message):
    weight: float
    vector: np.ndarray


@message_type(code=0x0102, name="plain.BroadcastAggregate", stage="BroadcastAggregate")
class BroadcastAggregate(Message):
    total_weight: float
    survivors: tuple[str, ...]
    weighted_sum: np.ndarray


@dataclass(frozen=True)
class _ServerData:
    updates: tuple[tuple[str, float, np.ndarray], ...] = ()
    aggregate: Aggregate | None = None


@dataclass(frozen=True)
class _ClientData:
    client_input: ClientInput
    aggregate_digest: str | None = None


class PlainProtocol(AggregationProtocol):
    name = "plain"
    secure = False
    evidence_stages = ("SubmitUpdate",)
    guarantee = (
        "insecure baseline: the aggregator sees every client's update in the clear; "
        "only the weighted sum goes back to the clients"
    )
    stages = (
        StageSpec(name="SubmitUpdate", sender="client", message_types=(SubmitUpdate.TYPE_NAME,)),
        StageSpec(
            name="BroadcastAggregate",
            sender="server",
            message_types=(BroadcastAggregate.TYPE_NAME,),
        ),
    )

    def __init__(self, *, min_survivors: int = 1) -> None:
        if type(min_survivors) is not int or min_survivors < 1:
            raise ProtocolInputError("min_survivors must be an int >= 1")
        self.min_survivors = min_survivors

    @property
    def params(self) -> dict[str, Any]:
        return {"min_survivors": self.min_survivors}

    def threshold(self, n_participants: int) -> int:
        return self.min_survivors

    def init_server(self, setup: RoundSetup, random_bytes: RandomBytes) -> _ServerData:
        return _ServerData()

    def init_client(
        self,
        setup: RoundSetup,
        client_id: str,
        client_input: ClientInput,
        random_bytes: RandomBytes,
    ) -> _ClientData:
        return _ClientData(client_input=client_input)

    def client_send(
        self, stage: str, state: ClientState
    ) -> tuple[ClientState, tuple[Message, ...]]:
        inp = state.data.client_input
        msg = SubmitUpdate(
            round_index=state.setup.round_index,
            sender=state.client_id,
            receiver=state.setup.aggregator_id,
            weight=inp.weight,
            vector=inp.vector,
        )
        return state, (msg,)

    def server_receive(
        self, stage: str, state: ServerState, messages: Sequence[Message]
    ) -> ServerState:
        spec = state.setup.vector
        bad: dict[str, str] = {}
        updates = []
        for msg in messages:
            if not isinstance(msg, SubmitUpdate):
                bad[msg.sender] = f"{msg.TYPE_NAME} is not an update"
            elif not spec.matches(msg.vector):
                bad[msg.sender] = f"vector is not {spec.length} x {spec.dtype}"
            elif msg.vector.dtype.kind == "f" and not np.isfinite(msg.vector).all():
                bad[msg.sender] = "vector has non-finite values"
            elif msg.weight < 0:
                bad[msg.sender] = "negative weight"
            else:
                updates.append((msg.sender, msg.weight, msg.vector))
        state = self.server_drop(state, bad)
        return dataclasses.replace(state, data=_ServerData(updates=tuple(updates)))

    def server_send(
        self, stage: str, state: ServerState
    ) -> tuple[ServerState, tuple[Message, ...]]:
        kept = [u for u in state.data.updates if u[0] in state.active]
        acc = np.zeros(state.setup.vector.length, dtype=np.float64)
        for _, weight, vector in kept:  # sorted by client id: a fixed summation order
            acc += weight * vector.astype(np.float64)
        aggregate = Aggregate(weighted_sum=acc, total_weight=math.fsum(w for _, w, _ in kept))
        out = tuple(
            BroadcastAggregate(
                round_index=state.setup.round_index,
                sender=state.setup.aggregator_id,
                receiver=cid,
                total_weight=aggregate.total_weight,
                survivors=state.active,
                weighted_sum=acc,
            )
            for cid in state.active
        )
        return dataclasses.replace(state, data=_ServerData(aggregate=aggregate)), out

    def client_receive(
        self, stage: str, state: ClientState, messages: Sequence[Message]
    ) -> ClientState:
        if not messages:  # dropped by the aggregator: nothing to co-sign
            return state
        msg = messages[0]
        if not isinstance(msg, BroadcastAggregate) or state.client_id not in msg.survivors:
            raise ProtocolAbort(f"{state.client_id}: malformed aggregate from the aggregator")
        if (
            msg.weighted_sum.shape != (state.setup.vector.length,)
            or msg.weighted_sum.dtype != "<f8"
        ):
            raise ProtocolAbort(f"{state.client_id}: aggregate of the wrong shape")
        digest = Aggregate(weighted_sum=msg.weighted_sum, total_weight=msg.total_weight).digest()
        return dataclasses.replace(
            state, data=dataclasses.replace(state.data, aggregate_digest=digest)
        )

    def client_aggregate_digest(self, state: ClientState) -> str | None:
        return state.data.aggregate_digest

    def result(self, state: ServerState) -> Aggregate:
        aggregate = state.data.aggregate
        if aggregate is None:
            raise ProtocolAbort("no aggregate was computed")
        return aggregate
