"""The contract every aggregation protocol implements: a round is a fixed sequence
of stages, and each side's step is a pure function

    (stage, state, inbound messages) -> (state, outbound messages)

over frozen states and typed messages. In a stage whose `sender` is the client,
every reachable client steps with no inbound and returns exactly one message to
the aggregator; the server then steps with those messages and returns none. In
a server stage the roles swap: the server returns at most one message per
active client, and each client steps with the messages addressed to it.

`AggregationProtocol` holds the checks every protocol needs (expected stage,
known sender, one message per client, the survivor threshold) in template
methods, so a protocol writes only its six hooks. A round aborts (the state
carries `aborted`) as soon as fewer clients than the threshold remain, before
the protocol's hooks can release anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from protocols.errors import ProtocolAbort, ProtocolError, ProtocolInputError
from protocols.messages import Message, canonical_json, check_party_id

Side = Literal["client", "server"]
RandomBytes = Callable[[int], bytes]
INPUT_DTYPES = ("float32", "float64", "int64")


@dataclass(frozen=True)
class StageSpec:
    """One stage of a round: who speaks in it and which message types it carries."""

    name: str
    sender: Side
    message_types: tuple[str, ...]


@dataclass(frozen=True)
class VectorSpec:
    """The public shape of every client's vector in a round."""

    length: int
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in INPUT_DTYPES or type(self.length) is not int or self.length < 0:
            raise ProtocolInputError(f"invalid vector spec {self}")

    def matches(self, vector: np.ndarray) -> bool:
        return vector.ndim == 1 and vector.shape[0] == self.length and vector.dtype == self.dtype


@dataclass(frozen=True)
class ClientInput:
    """What the federation loop hands a protocol for one client: a flat vector
    (float32/float64, or int64 for distributed DP) and its public weight."""

    vector: np.ndarray
    weight: float

    def __post_init__(self) -> None:
        v = self.vector
        if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype.name not in INPUT_DTYPES:
            raise ProtocolInputError(
                "a client vector must be a 1-D float32, float64 or int64 array"
            )
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise ProtocolInputError("a client vector must be finite")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not np.isfinite(w) or w < 0:
            raise ProtocolInputError(f"a client weight must be finite and >= 0, got {w!r}")
        object.__setattr__(self, "weight", float(w))

    @property
    def spec(self) -> VectorSpec:
        return VectorSpec(length=int(self.vector.shape[0]), dtype=self.vector.dtype.name)


@dataclass(frozen=True)
class RoundSetup:
    """The public parameters of one round, known to every party."""

    protocol: str
    round_index: int
    aggregator_id: str
    participants: tuple[str, ...]
    vector: VectorSpec
    threshold: int
    # The run and session the round belongs to, as the transport names them; bound
    # into every signed key advert so that one cannot be replayed into another run.
    binding: str = ""


@dataclass(frozen=True)
class Aggregate:
    """What a round releases: sum_i w_i v_i over the survivors, and sum_i w_i."""

    weighted_sum: np.ndarray
    total_weight: float

    def digest(self) -> str:
        """SHA-256 over the aggregate's canonical bytes: what survivors co-sign."""
        values = np.ascontiguousarray(self.weighted_sum, dtype="<f8")
        head = canonical_json(
            {"dtype": "<f8", "shape": list(values.shape), "total_weight": float(self.total_weight)}
        )
        return hashlib.sha256(
            b"securediff/aggregate/v1\n" + head + b"\n" + values.tobytes()
        ).hexdigest()


@dataclass(frozen=True)
class ServerState:
    """The aggregator's state: generic bookkeeping plus the protocol's own `data`."""

    setup: RoundSetup
    stage_index: int
    active: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...]
    ignored: tuple[tuple[str, str], ...]
    aborted: str | None
    data: Any


@dataclass(frozen=True)
class ClientState:
    setup: RoundSetup
    client_id: str
    stage_index: int
    data: Any


class AggregationProtocol(ABC):
    """Base of every protocol. Subclasses set the class attributes and the hooks."""

    name: ClassVar[str]
    secure: ClassVar[bool]
    guarantee: ClassVar[str]
    stages: tuple[StageSpec, ...]
    # Client stages whose messages let the aggregator compute a sum (secagg's share
    # reveals, ckks' decryptions, the inputs themselves for plain and the simulated
    # tee). A round index with a record in one of them counts as released: a
    # verifier audits it closed or not, and no round index may be released twice.
    evidence_stages: ClassVar[tuple[str, ...]] = ()

    @property
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """JSON-serialisable constructor parameters (recorded in the transcript header)."""

    @abstractmethod
    def threshold(self, n_participants: int) -> int:
        """The fewest survivors a round of `n_participants` may release an aggregate for."""

    # -- hooks a protocol implements ------------------------------------------------
    @abstractmethod
    def init_server(self, setup: RoundSetup, random_bytes: RandomBytes) -> Any: ...

    @abstractmethod
    def init_client(
        self,
        setup: RoundSetup,
        client_id: str,
        client_input: ClientInput,
        random_bytes: RandomBytes,
    ) -> Any: ...

    @abstractmethod
    def server_receive(
        self, stage: str, state: ServerState, messages: Sequence[Message]
    ) -> ServerState:
        """Take one screened message per active sender; drop senders whose content is bad."""

    @abstractmethod
    def server_send(
        self, stage: str, state: ServerState
    ) -> tuple[ServerState, tuple[Message, ...]]:
        """Only called while at least `threshold` clients are active."""

    @abstractmethod
    def client_send(
        self, stage: str, state: ClientState
    ) -> tuple[ClientState, tuple[Message, ...]]: ...

    @abstractmethod
    def client_receive(
        self, stage: str, state: ClientState, messages: Sequence[Message]
    ) -> ClientState: ...

    @abstractmethod
    def result(self, state: ServerState) -> Aggregate: ...

    def bind(self, identities: Any) -> AggregationProtocol:
        """The protocol bound to the run's pinned identity keys (a roster): a protocol
        that signs its own payloads (secagg) needs them; others return themselves."""
        return self

    def contributors(self, state: ServerState) -> tuple[str, ...]:
        """Whose inputs the released aggregate holds. By default the survivors; a
        protocol whose sum is fixed before its last stage (secagg, ckks, tee) keeps
        a client that leaves after that point in the sum, and says so here."""
        return state.active

    def round_stats(self, state: ServerState) -> dict[str, Any]:
        """Protocol-specific figures for the round log (JSON-safe)."""
        return {}

    def reference_input(self, vector: np.ndarray) -> np.ndarray:
        """A client's input as the protocol's guarantee defines it: what the
        aggregate is the weighted sum of (secagg clips to its range first)."""
        return vector

    def aggregate_tolerance(
        self, *, max_abs: float, clients: int, total_weight: float = 1.0, integer: bool = False
    ) -> float:
        """The stated per-coordinate bound on |aggregate - exact weighted sum of the
        contributors' reference inputs|, beyond float64 rounding; `max_abs` is the
        largest coordinate of that exact sum."""
        return 0.0

    def client_aggregate_digest(self, state: ClientState) -> str | None:
        """The aggregate digest a client saw, checked before it co-signs (None: it saw none)."""
        return None

    # -- template steps -----------------------------------------------------------
    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise ProtocolInputError(f"{self.name} has no stage {name!r}")

    def server_start(self, *, setup: RoundSetup, random_bytes: RandomBytes) -> ServerState:
        state = ServerState(
            setup=setup,
            stage_index=0,
            active=setup.participants,
            dropped=(),
            ignored=(),
            aborted=None,
            data=self.init_server(setup, random_bytes),
        )
        return _check_threshold(state, "the start")

    def client_start(
        self,
        *,
        setup: RoundSetup,
        client_id: str,
        client_input: ClientInput,
        random_bytes: RandomBytes,
    ) -> ClientState:
        if client_id not in setup.participants:
            raise ProtocolInputError(f"{client_id!r} is not a participant of this round")
        data = self.init_client(setup, client_id, client_input, random_bytes)
        return ClientState(setup=setup, client_id=client_id, stage_index=0, data=data)

    def server_drop(self, state: ServerState, reasons: Mapping[str, str]) -> ServerState:
        """Drop active clients from the round, recording why (pure)."""
        gone = {cid: why for cid, why in reasons.items() if cid in state.active}
        if not gone:
            return state
        return dataclasses.replace(
            state,
            active=tuple(c for c in state.active if c not in gone),
            dropped=state.dropped + tuple(sorted(gone.items())),
        )

    def server_step(
        self, stage: str, state: ServerState, inbound: Sequence[Message]
    ) -> tuple[ServerState, tuple[Message, ...]]:
        spec = self._expect(stage, state.stage_index, state.aborted)
        state, accepted = self._screen(spec, state, inbound)
        outbound: tuple[Message, ...] = ()
        if spec.sender == "client":
            state = self.server_receive(stage, state, accepted)
            heard = {m.sender for m in accepted}
            state = self.server_drop(
                state, {c: f"silent in {stage}" for c in state.active if c not in heard}
            )
            state = _check_threshold(state, stage)
        else:
            state = _check_threshold(state, stage)
            if state.aborted is None:
                state, outbound = self.server_send(stage, state)
                _check_server_outbound(spec, state, outbound)
        return dataclasses.replace(state, stage_index=state.stage_index + 1), outbound

    def client_step(
        self, stage: str, state: ClientState, inbound: Sequence[Message]
    ) -> tuple[ClientState, tuple[Message, ...]]:
        spec = self._expect(stage, state.stage_index, None)
        me, setup = state.client_id, state.setup
        outbound: tuple[Message, ...] = ()
        if spec.sender == "client":
            if inbound:
                raise ProtocolAbort(f"{me}: the aggregator sent a message in client stage {stage}")
            state, outbound = self.client_send(stage, state)
            if len(outbound) != 1 or not _fits(outbound[0], spec, setup, me, setup.aggregator_id):
                raise ProtocolError(f"{self.name}.{stage}: a client must send one valid message")
        else:
            if len(inbound) > 1 or not all(
                _fits(m, spec, setup, setup.aggregator_id, me) for m in inbound
            ):
                raise ProtocolAbort(f"{me}: unexpected message from the aggregator in {stage}")
            state = self.client_receive(stage, state, inbound)
        return dataclasses.replace(state, stage_index=state.stage_index + 1), outbound

    def server_result(self, state: ServerState) -> Aggregate:
        if state.aborted is not None:
            raise ProtocolAbort(state.aborted)
        if state.stage_index != len(self.stages):
            raise ProtocolError("the round has stages left to run")
        return self.result(state)

    def _expect(self, stage: str, index: int, aborted: str | None) -> StageSpec:
        if aborted is not None:
            raise ProtocolAbort(aborted)
        if index >= len(self.stages) or self.stages[index].name != stage:
            expected = self.stages[index].name if index < len(self.stages) else "round close"
            raise ProtocolError(
                f"{self.name}: stepped {stage!r} but the next stage is {expected!r}"
            )
        return self.stages[index]

    def _screen(
        self, spec: StageSpec, state: ServerState, inbound: Sequence[Message]
    ) -> tuple[ServerState, tuple[Message, ...]]:
        """Accept one in-stage message per active sender; drop senders of anything else."""
        setup = state.setup
        accepted: dict[str, Message] = {}
        drops: dict[str, str] = {}
        ignored = list(state.ignored)
        for msg in inbound:
            who = msg.sender
            if who not in setup.participants:
                ignored.append((who, f"unknown sender in {spec.name}"))
            elif who not in state.active or who in drops:
                ignored.append((who, f"message from a dropped client in {spec.name}"))
            elif spec.sender != "client" or not _fits(msg, spec, setup, who, setup.aggregator_id):
                drops[who] = _misfit(msg, spec, setup)
                accepted.pop(who, None)
            elif who in accepted:
                drops[who] = f"more than one message in stage {spec.name}"
                del accepted[who]
            else:
                accepted[who] = msg
        state = dataclasses.replace(self.server_drop(state, drops), ignored=tuple(ignored))
        return state, tuple(accepted[c] for c in sorted(accepted))


def _fits(msg: Message, spec: StageSpec, setup: RoundSetup, sender: str, receiver: str) -> bool:
    return (
        msg.TYPE_NAME in spec.message_types
        and msg.round_index == setup.round_index
        and msg.sender == sender
        and msg.receiver == receiver
    )


def _misfit(msg: Message, spec: StageSpec, setup: RoundSetup) -> str:
    if spec.sender != "client" or msg.TYPE_NAME not in spec.message_types:
        return f"{msg.TYPE_NAME} not expected in stage {spec.name}"
    if msg.round_index != setup.round_index:
        return f"message for round {msg.round_index} in round {setup.round_index}"
    return f"message addressed to {msg.receiver}"


def _check_threshold(state: ServerState, where: str) -> ServerState:
    if state.aborted is None and len(state.active) < state.setup.threshold:
        why = (
            f"round {state.setup.round_index}: {len(state.active)} of "
            f"{len(state.setup.participants)} clients left at {where}, "
            f"below the threshold of {state.setup.threshold}"
        )
        return dataclasses.replace(state, aborted=why)
    return state


def _check_server_outbound(spec: StageSpec, state: ServerState, out: tuple[Message, ...]) -> None:
    receivers = [m.receiver for m in out]
    setup = state.setup
    if len(set(receivers)) != len(receivers) or not all(
        r in state.active and _fits(m, spec, setup, setup.aggregator_id, r)
        for m, r in zip(out, receivers, strict=True)
    ):
        raise ProtocolError(f"{setup.protocol}.{spec.name}: invalid server messages")


def make_setup(
    protocol: AggregationProtocol,
    *,
    round_index: int,
    aggregator_id: str,
    participants: Sequence[str],
    vector: VectorSpec,
    binding: str = "",
) -> RoundSetup:
    """The public parameters of a round, validated."""
    if not isinstance(binding, str) or len(binding) > 512 or not binding.isprintable():
        raise ProtocolInputError("a round's binding must be printable text of at most 512 chars")
    ids = tuple(sorted(check_party_id(c) for c in participants))
    if len(set(ids)) != len(ids) or not ids:
        raise ProtocolInputError("a round needs one or more distinct participants")
    if check_party_id(aggregator_id) in ids:
        raise ProtocolInputError("the aggregator cannot be a participant")
    if type(round_index) is not int or round_index < 0:
        raise ProtocolInputError("round_index must be a non-negative int")
    return RoundSetup(
        protocol=protocol.name,
        round_index=round_index,
        aggregator_id=aggregator_id,
        participants=ids,
        vector=vector,
        threshold=protocol.threshold(len(ids)),
        binding=binding,
    )
