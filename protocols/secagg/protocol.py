"""`secagg`: Bonawitz et al. (CCS 2017) secure aggregation over the SecAgg+
neighbour graph of Bell et al. (CCS 2020). See docs/secagg.md for the
parameters, the threat model and what is (and is not) guaranteed.

The aggregator only ever sees masked encodings and, per owner, either the
shares of the self-mask seed (included clients) or of the pairwise-mask key
(dropped clients), so it learns the weighted sum of the included clients'
clipped, quantized updates and their total weight, nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from protocols.errors import ProtocolError, ProtocolInputError
from protocols.hazmat.quantize import error_bound
from protocols.messages import Message
from protocols.roster import Identities
from protocols.secagg import client, server
from protocols.secagg.answers import AnswerLog
from protocols.secagg.audit import audit_round, transcript_meta
from protocols.secagg.context import RoundContext, round_context
from protocols.secagg.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySign,
    ForwardShares,
    MaskedInput,
    Release,
    RouteKeys,
    ShareKeys,
    Unmask,
    UnmaskRequest,
)
from protocols.secagg.params import SecAggParams, plan_graph
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

SEED_BYTES = 32


def _spec(name: str, sender: str, cls: type[Message]) -> StageSpec:
    return StageSpec(name=name, sender=sender, message_types=(cls.TYPE_NAME,))  # type: ignore[arg-type]


_BEFORE = (
    _spec("AdvertiseKeys", "client", AdvertiseKeys),
    _spec("RouteKeys", "server", RouteKeys),
    _spec("ShareKeys", "client", ShareKeys),
    _spec("ForwardShares", "server", ForwardShares),
    _spec("MaskedInput", "client", MaskedInput),
)
_CONSISTENCY = (
    _spec("ConsistencyRequest", "server", ConsistencyRequest),
    _spec("ConsistencySign", "client", ConsistencySign),
)
_AFTER = (
    _spec("UnmaskRequest", "server", UnmaskRequest),
    _spec("Unmask", "client", Unmask),
    _spec("Release", "server", Release),
)


class SecAggProtocol(AggregationProtocol):
    name = "secagg"
    secure = True
    evidence_stages = ("Unmask",)
    guarantee = (
        "pairwise-masked secure aggregation (Bonawitz et al. 2017, SecAgg+ graph of Bell et al. "
        "2020): the aggregator learns only the weighted sum and total weight of the included "
        "clients' clipped, quantized updates; honest clients assumed, active aggregator defended"
    )

    def __init__(self, *, identities: Identities | None = None, answers: AnswerLog | None = None,
                 **params: Any) -> None:
        try:
            self.config = SecAggParams(**params)
        except TypeError as exc:
            raise ProtocolInputError(f"secagg: {exc}") from None
        self.identities = identities
        self.answers = answers  # where clients claim each round index before unmasking
        self.stages = _BEFORE + (_CONSISTENCY if self.config.consistency_check else ()) + _AFTER

    def bind(self, identities: Identities) -> SecAggProtocol:
        """The same protocol with every party's roster identity key: advertised keys
        are then signed and checked against the pinned roster (a must against an
        active aggregator, which could otherwise substitute keys)."""
        return type(self)(identities=identities, answers=self.answers, **self.params)

    def with_answers(self, answers: AnswerLog) -> SecAggProtocol:
        """The same protocol whose clients claim each round index in `answers` (durable
        where it is a `FileAnswerLog`) before they reveal any share. For clients that
        step once per stage (the in-process driver): a Flower node replays its steps
        at each request, so it claims its trained update instead (flower/trainer.py)."""
        return type(self)(identities=self.identities, answers=answers, **self.params)

    @property
    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}

    def threshold(self, n_participants: int) -> int:
        return plan_graph(n_participants, self.config).threshold

    # -- state set-up --------------------------------------------------------------------
    def _context(self, setup: RoundSetup) -> RoundContext:
        return round_context(
            params=self.config,
            round_index=setup.round_index,
            n=len(setup.participants),
            length=setup.vector.length,
            dtype=setup.vector.dtype,
            binding=setup.binding,
        )

    def init_server(self, setup: RoundSetup, random_bytes: RandomBytes) -> server.ServerData:
        return server.ServerData(ctx=self._context(setup))

    def init_client(
        self, setup: RoundSetup, client_id: str, client_input: ClientInput,
        random_bytes: RandomBytes,
    ) -> client.ClientData:
        return client.start(self._context(setup), me=client_id, client_input=client_input,
                            seed=random_bytes(SEED_BYTES))

    # -- the aggregator ----------------------------------------------------------------------
    def server_receive(
        self, stage: str, state: ServerState, messages: Sequence[Message]
    ) -> ServerState:
        data, abort = state.data, None
        roster = self.identities.roster() if self.identities is not None else None
        if stage == "AdvertiseKeys":
            data, bad = server.receive_keys(data, messages, roster)
        elif stage == "ShareKeys":
            data, bad = server.receive_shares(data, messages)
        elif stage == "MaskedInput":
            data, bad = server.receive_masked(data, messages)
        elif stage == "ConsistencySign":
            data, bad = server.receive_signatures(data, messages)
        elif stage == "Unmask":
            data, bad, abort = server.receive_unmask(data, messages)
        else:
            raise ProtocolError(f"secagg: no client stage {stage!r}")
        state = self.server_drop(dataclasses.replace(state, data=data), bad)
        return state if abort is None else dataclasses.replace(state, aborted=abort)

    def server_send(
        self, stage: str, state: ServerState
    ) -> tuple[ServerState, tuple[Message, ...]]:
        data, agg, active, abort = state.data, state.setup.aggregator_id, state.active, None
        if stage == "RouteKeys":
            data, out = server.route_keys(data, active, agg)
        elif stage == "ForwardShares":
            data, out, abort = server.forward_shares(data, active, agg)
        elif stage == "ConsistencyRequest":
            data, out, abort = server.consistency_request(data, active, agg)
        elif stage == "UnmaskRequest":
            data, out, abort = server.unmask_request(
                data, active, agg, consistency=self.config.consistency_check)
        elif stage == "Release":
            data, out = server.release(data, active, agg)
        else:
            raise ProtocolError(f"secagg: no server stage {stage!r}")
        state = dataclasses.replace(state, data=data)
        if abort is not None:
            return dataclasses.replace(state, aborted=abort), ()
        return state, out

    def result(self, state: ServerState) -> Aggregate:
        decoded = state.data.decoded
        if decoded is None:
            raise ProtocolError("secagg: no aggregate was unmasked")
        return Aggregate(weighted_sum=decoded.weighted_sum, total_weight=decoded.total_weight)

    def reference_input(self, vector: np.ndarray) -> np.ndarray:
        # Integer inputs (distributed DP) are clipped to the levels, floats to the range.
        if np.issubdtype(vector.dtype, np.integer):
            q = self.config.fixed.levels
            return np.clip(vector, -q, q)
        r = self.config.clip_range
        return np.clip(vector, -r, r)

    def aggregate_tolerance(
        self, *, max_abs: float, clients: int, total_weight: float = 1.0, integer: bool = False
    ) -> float:
        """Stochastic rounding moves each weighted input by less than one step."""
        return error_bound(total_weight=total_weight, fixed=self.config.fixed, integer=integer)

    def contributors(self, state: ServerState) -> tuple[str, ...]:
        """Whose inputs the aggregate holds: the included set S. A client that drops
        after S is fixed (before Unmask or Release) stays in: its input cannot be
        taken out without revealing it (see docs/secagg.md)."""
        return state.data.included

    def round_stats(self, state: ServerState) -> dict[str, Any]:
        data = state.data
        ctx = data.ctx
        return {
            "degree": ctx.plan.degree,
            "threshold": ctx.plan.threshold,
            "ring_bits": ctx.ring.bits,
            "included": list(data.included),
            "recovered_dropouts": list(data.dropped),
            "clipped_values": data.decoded.clipped if data.decoded is not None else None,
        }

    # -- the clients ------------------------------------------------------------------------------
    def client_send(
        self, stage: str, state: ClientState
    ) -> tuple[ClientState, tuple[Message, ...]]:
        st, agg = state.data, state.setup.aggregator_id
        if stage == "AdvertiseKeys":
            msg: Message = client.advertise(st, self.identities, agg)
        elif stage == "ShareKeys":
            st, msg = client.share_keys(st, agg)
        elif stage == "MaskedInput":
            msg = client.masked_input(st, agg)
        elif stage == "ConsistencySign":
            msg = client.consistency_sign(st, agg)
        elif stage == "Unmask":
            st, msg = client.unmask(st, agg)
        else:
            raise ProtocolError(f"secagg: no client stage {stage!r}")
        return dataclasses.replace(state, data=st), (msg,)

    def client_receive(
        self, stage: str, state: ClientState, messages: Sequence[Message]
    ) -> ClientState:
        st = state.data
        if stage == "RouteKeys":
            st = client.receive_route(st, messages, identities=self.identities,
                                      participants=state.setup.participants)
        elif stage == "ForwardShares":
            st = client.receive_forward(st, messages)
        elif stage == "ConsistencyRequest":
            st = client.receive_consistency(st, messages)
        elif stage == "UnmaskRequest":
            st = client.receive_unmask_request(
                st, messages, consistency=self.config.consistency_check, answers=self.answers)
        elif stage == "Release":
            st = client.receive_release(st, messages)
        else:
            raise ProtocolError(f"secagg: no server stage {stage!r}")
        return dataclasses.replace(state, data=st)

    def client_aggregate_digest(self, state: ClientState) -> str | None:
        return state.data.aggregate_digest

    # -- transcripts --------------------------------------------------------------------------------
    def transcript_meta(self, message: Message) -> dict[str, Any] | None:
        return transcript_meta(message)

    def audit_round(self, view: Any) -> list[tuple[int, str]]:
        return audit_round(self.config, view)
