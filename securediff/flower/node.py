"""A securediff client on its own machine: answers the aggregator's requests.

Flower starts a fresh ClientApp process for every message, so nothing survives
between two requests except the node's `state` (a flat dict the Flower app keeps
in the SuperNode's context). The protocol's client steps are pure, so the node
keeps only what it needs to rebuild its round state: the round set-up, its
input, a per-round 32-byte seed (the protocol's only randomness on the client)
and the server-stage messages it has received; each request replays those steps
(cheap next to the masking PRG, which runs at most twice) and takes one more.
The seed stays on the node; in the insecure deterministic test mode it is
derived from the recorded seed so that runs repeat.

The node signs its own transcript records and co-signatures (`PartyChain`) and
refuses a chain head it did not sign itself (on a fresh node, the first head the
aggregator names is trusted: documented in the README).

A node keeps the roster it was started with (`keep_roster`): a reviewer who
checks a transcript against a roster can get it from any node, byte for byte,
instead of from the aggregator whose transcript is under review.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocols.errors import ProtocolAbort, ProtocolInputError, RosterError
from protocols.hazmat.chacha import chacha20_stream
from protocols.messages import canonical_json, decode, encode, sha256_hex
from protocols.registry import make_protocol
from protocols.remote import PartyChain, PartyIdentities
from protocols.roster import load_rosters
from protocols.stages import AggregationProtocol, ClientInput, ClientState, RoundSetup
from securediff.flower.exchange import (
    HELLO_DOMAIN,
    Reply,
    Request,
    installed_version,
    parse_setup,
    read_head,
)
from securediff.flower.policy import NodePolicy

# (round set-up) -> this client's input for the round
InputSource = Callable[[RoundSetup], ClientInput]
_SEED_DOMAIN = b"securediff/flower/node-seed/v1\n"


def stream(key: bytes) -> Callable[[int], bytes]:
    """A ChaCha20 keystream as the protocol's `random_bytes`."""
    return chacha20_stream(key)


@dataclass
class ClientNode:
    """One client's side of every exchange; `state` is all it keeps between them."""

    identities: PartyIdentities
    inputs: InputSource
    state: dict[str, Any]
    insecure_seed: int | None = None
    policy: NodePolicy = NodePolicy()  # what the node accepts of the round's parameters

    @property
    def client_id(self) -> str:
        return self.identities.party

    def handle(self, request: Request) -> Reply:
        kind = request.get("kind")
        if kind == "hello":
            theirs, mine = request.get("securediff"), installed_version()
            if theirs is not None and theirs != mine:
                raise ProtocolInputError(f"{self.client_id}: the aggregator runs securediff {theirs}, "
                                         f"this node {mine}; both must run the same release")
            nonce = bytes(request["nonce"])
            key = self.identities.signing_key(self.client_id)
            sig = key.sign(HELLO_DOMAIN + nonce + self.client_id.encode())
            return {"client_id": self.client_id, "sig": sig}
        if kind not in ("step", "close"):
            raise ProtocolInputError(f"unknown request kind {kind!r}")
        protocol, setup = self._round(request)
        chain = self._chain(request)
        st = self._replay(protocol, setup)
        for stage, payload in zip(request["deliver_stages"], request["deliver_payloads"],
                                  strict=True):
            st = self._take(protocol, st, stage, bytes(payload))
        if kind == "step":
            stage = str(request["stage"])
            st, out = protocol.client_step(stage, st, ())
            self.state["history"].append([stage, b""])
            payload = encode(out[0])
            rec = chain.sign_message(
                protocol=protocol, session=int(request["session"]), round_index=setup.round_index,
                stage=stage, message_type=out[0].TYPE_NAME, receiver=out[0].receiver,
                payload=payload,
            )
            self._save_chain(chain, committed=True)
            self.state["own"].append(_digest(rec))
            return {"payload": payload, "record": json.dumps(rec)}
        statement = json.loads(request["statement"])
        if (statement.get("round"), statement.get("protocol")) != (setup.round_index,
                                                                    protocol.name):
            raise ProtocolAbort(f"{self.client_id}: the close names another round")
        cosig = chain.cosign(
            statement=statement, record_digests=list(request["records"]),
            own_digests=self.state["own"],
            own_aggregate_digest=protocol.client_aggregate_digest(st),
        )
        self._save_chain(chain, committed=False)
        return {"cosig": json.dumps(cosig)}

    # -- round state ------------------------------------------------------------------
    def _round(self, request: Request) -> tuple[AggregationProtocol, RoundSetup]:
        name, params, setup = parse_setup(str(request["setup"]))
        if setup.round_index != int(request["round"]) or self.client_id not in setup.participants:
            raise ProtocolAbort(f"{self.client_id}: not a participant of this round")
        if setup.aggregator_id != self.identities.aggregator_id:
            raise ProtocolAbort(f"{self.client_id}: the round names another aggregator")
        protocol = self.policy.apply(self.client_id,
                                     make_protocol(name, **params).bind(self.identities),
                                     participants=len(setup.participants))
        if protocol.threshold(len(setup.participants)) != setup.threshold:
            raise ProtocolAbort(f"{self.client_id}: the round's threshold is not the protocol's")
        if self.state.get("setup") != request["setup"]:
            if self.state.get("round", -1) >= setup.round_index:
                raise ProtocolAbort(f"{self.client_id}: round {setup.round_index} was set up before")
            client_input = self.inputs(setup)
            self.state.update(
                round=setup.round_index, setup=request["setup"], history=[], own=[],
                seed=self._seed(setup.round_index), vector=client_input.vector.tobytes(),
                dtype=client_input.vector.dtype.str, weight=client_input.weight,
            )
        return protocol, setup

    def _seed(self, round_index: int) -> bytes:
        if self.insecure_seed is None:
            return os.urandom(32)
        return hashlib.sha256(
            _SEED_DOMAIN + f"{self.insecure_seed}/{self.client_id}/{round_index}".encode()
        ).digest()

    def _replay(self, protocol: AggregationProtocol, setup: RoundSetup) -> ClientState:
        s = self.state
        vector = np.frombuffer(bytes(s["vector"]), dtype=np.dtype(s["dtype"])).astype(
            setup.vector.dtype)
        st = protocol.client_start(
            setup=setup, client_id=self.client_id,
            client_input=ClientInput(vector=vector, weight=float(s["weight"])),
            random_bytes=stream(bytes(s["seed"])),
        )
        for stage, payload in list(s["history"]):
            if protocol.stage(stage).sender == "client":
                st, _ = protocol.client_step(stage, st, ())
            else:
                st, _ = protocol.client_step(stage, st, _inbound(payload))
        return st

    def _take(self, protocol: AggregationProtocol, st: ClientState, stage: str,
              payload: bytes) -> ClientState:
        if protocol.stage(stage).sender != "server":
            raise ProtocolAbort(f"{self.client_id}: asked to take {stage} as a server stage")
        st, _ = protocol.client_step(stage, st, _inbound(payload))
        self.state["history"].append([stage, payload])
        return st

    # -- the client's signature chain ----------------------------------------------------
    def _chain(self, request: Request) -> PartyChain:
        named = read_head(request)
        head = _head(self.state.get("head"))
        pending = list(self.state.get("pending_cosigs", []))
        next_seq = 0 if head is None else head[0] + 1
        if named == head:
            pass
        elif head is None and not self.state.get("signed"):
            head = named  # a fresh node trusts the first head it is told (see README)
        elif named is not None and named[0] == next_seq and named[1] in pending:
            head = named  # the co-signature of the last close was written
        else:
            raise ProtocolAbort(
                f"{self.client_id}: the aggregator names a chain head it did not sign")
        return PartyChain(party=self.client_id, key=self.identities.signing_key(self.client_id),
                          head=head)

    def _save_chain(self, chain: PartyChain, *, committed: bool) -> None:
        """A message record is written as signed; a co-signature only if the whole
        close succeeds, so it stays pending until a later request names it."""
        self.state["signed"] = True
        if committed:
            self.state["head"] = list(chain.head) if chain.head else None
            self.state["pending_cosigs"] = []
        else:
            self.state.setdefault("pending_cosigs", []).append(chain.head[1])


def _head(value: Any) -> tuple[int, str] | None:
    return None if not value else (int(value[0]), str(value[1]))


def _inbound(payload: bytes) -> list:
    return [decode(bytes(payload))] if payload else []


def _digest(rec: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(rec))


@dataclass(frozen=True)
class KeptRoster:
    path: Path  # STATE-DIR/roster.json, the copy the node runs with
    sha256: str  # of the file's bytes (pin it with sha256sum or transcript verify)
    digests: tuple[str, ...]  # the digest of each roster in it, as transcripts name them


def keep_roster(roster: str | os.PathLike[str], state_dir: str | os.PathLike[str]) -> KeptRoster:
    """Copy the roster file byte for byte to `state_dir/roster.json`, the file the
    node then runs with. A roster kept before that differs stays as
    `state_dir/rosters/SHA256.json`, so a transcript of an earlier run can still
    be checked against the roster the node held then."""
    try:
        data = Path(roster).read_bytes()
    except OSError as exc:
        raise RosterError(f"cannot read roster {roster}: {exc}") from None
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    kept = state / "roster.json"
    staged = kept.with_name("roster.json.staged")
    staged.write_bytes(data)
    try:
        rosters = load_rosters(staged)  # the very bytes kept must be a roster
    except RosterError:
        staged.unlink()
        raise
    if kept.is_file() and (earlier := kept.read_bytes()) != data:
        (state / "rosters").mkdir(exist_ok=True)
        _write_atomic(state / "rosters" / f"{hashlib.sha256(earlier).hexdigest()}.json", earlier)
    os.replace(staged, kept)
    return KeptRoster(path=kept, sha256=hashlib.sha256(data).hexdigest(),
                      digests=tuple(r.digest for r in rosters))

def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
