"""The protocol contract suite (tests/protocols/test_contract.py), test for test,
over the remote transport: `run_remote_round` against one `ClientNode` per client.

Every request, every reply and every node's kept state crosses a wire as Flower
carries it: a `ConfigRecord` serialized to Flower's protobuf bytes and parsed
back, the node state through `apps.state_to_record` as the ClientApp keeps it;
a node's exception becomes an error reply, as Flower turns a failing ClientApp
into one. The contract's dropout plan and tap act on that wire: a client gone
before a stage answers no request from that stage on, and the tap sees (and may
corrupt) every protocol message in the requests and replies."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ConfigRecord
from flwr.common.serde import config_record_from_proto, config_record_to_proto
from flwr.proto.recorddict_pb2 import ConfigRecord as ProtoConfigRecord

from protocols.driver import RoundResult, Tap
from protocols.remote import PartyIdentities, SignedRecordWriter
from protocols.roster import Identities
from protocols.stages import AggregationProtocol, ClientInput, RandomBytes, VectorSpec
from securediff.flower.apps import state_from_record, state_to_record
from securediff.flower.driver import Exchange, run_remote_round
from securediff.flower.node import ClientNode
from securediff.flower.policy import NodePolicy
from tests.protocols.conftest import identities, make_inputs  # noqa: F401  (fixtures)
from tests.protocols.test_contract import *  # noqa: F403  (the same tests, collected here)

SEED = 5  # the nodes' insecure seed: their randomness repeats from run to run
# ckks needs nodes that assume an honest-but-curious aggregator (test_node_policy.py).
TRUSTING = NodePolicy(threat_model="honest-but-curious")


def over_the_wire(record: ConfigRecord) -> dict[str, Any]:
    data = config_record_to_proto(record).SerializeToString()
    return dict(config_record_from_proto(ProtoConfigRecord.FromString(data)))


class WireExchange:
    """Requests to nodes and replies back, through Flower's serialization."""

    def __init__(self, protocol: AggregationProtocol, nodes: Mapping[str, ClientNode],
                 dropouts: Mapping[str, str], tap: Tap | None) -> None:
        self.index = {s.name: i for i, s in enumerate(protocol.stages)}
        self.close_index = len(protocol.stages)
        self.nodes = nodes
        self.dropouts = dict(dropouts)
        self.tap = tap
        self.kept: dict[str, ConfigRecord] = {}  # each node's context.state

    def _gone(self, cid: str, request: Mapping[str, Any]) -> bool:
        at = self.close_index if request["kind"] == "close" else self.index[request["stage"]]
        return cid in self.dropouts and at >= self.index[self.dropouts[cid]]

    def __call__(self, requests: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        replies = {}
        for cid, request in requests.items():
            if self._gone(cid, request):
                continue
            if self.tap is not None:
                request = {**request, "deliver_payloads": [
                    self.tap(stage, bytes(p)) if p else p
                    for stage, p in zip(request["deliver_stages"], request["deliver_payloads"],
                                        strict=True)]}
            replies[cid] = over_the_wire(ConfigRecord(self._answer(cid, over_the_wire(
                ConfigRecord(request)))))
            if self.tap is not None and "payload" in replies[cid]:
                replies[cid]["payload"] = self.tap(request["stage"], replies[cid]["payload"])
        return replies

    def _answer(self, cid: str, request: dict[str, Any]) -> dict[str, Any]:
        node = self.nodes[cid]
        kept = self.kept.get(cid)
        node.state = state_from_record(ConfigRecord(over_the_wire(kept))) if kept else {}
        try:
            return node.handle(request)
        except Exception as exc:  # noqa: BLE001  (Flower answers a failing ClientApp so)
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            self.kept[cid] = state_to_record(node.state)


class RemoteRounds:
    """Rounds over the remote transport: the aggregator holds only its own key."""

    def __init__(self, everyone: Identities) -> None:
        self.identities = everyone  # the clients' keys go to their nodes only
        self.me = PartyIdentities(everyone.roster(), party=everyone.aggregator_id,
                                  key=everyone.signing_key(everyone.aggregator_id))

    def open(self, path: Path, protocol: AggregationProtocol) -> SignedRecordWriter:
        return SignedRecordWriter.open(path, identities=self.me, protocol=protocol.bind(self.me))

    def run(self, protocol: AggregationProtocol, *, round_index: int,
            inputs: Mapping[str, ClientInput], transcript: SignedRecordWriter | None,
            dropouts: Mapping[str, str] | None = None, vector_spec: VectorSpec | None = None,
            random_bytes: RandomBytes | None = None, tap: Tap | None = None) -> RoundResult:
        if vector_spec is None:
            (vector_spec,) = {inp.spec for inp in inputs.values()}
        roster = self.identities.roster()
        nodes = {
            c: ClientNode(identities=PartyIdentities(roster, party=c,
                                                     key=self.identities.signing_key(c)),
                          inputs=lambda setup, c=c: inputs[c], state={}, insecure_seed=SEED,
                          policy=TRUSTING)
            for c in inputs
        }
        bound = protocol.bind(self.me)
        exchange: Exchange = WireExchange(bound, nodes, dropouts or {}, tap)
        kwargs = dict(round_index=round_index, participants=list(inputs), vector_spec=vector_spec,
                      identities=self.me, exchange=exchange, random_bytes=random_bytes)
        if transcript is not None:
            return run_remote_round(bound, transcript=transcript, **kwargs)
        with tempfile.TemporaryDirectory() as tmp:  # the remote transport always records
            with self.open(Path(tmp) / "transcript.jsonl", protocol) as writer:
                return run_remote_round(bound, transcript=writer, **kwargs)

    def dropped_at(self, protocol: AggregationProtocol, stage: str) -> int:
        """The stage index before which the aggregator drops a client gone before
        `stage`: it learns so at its next request, the next client stage or the close."""
        names = [s.name for s in protocol.stages]
        later = [i for i, s in enumerate(protocol.stages)
                 if i >= names.index(stage) and s.sender == "client"]
        return later[0] if later else len(names)


@pytest.fixture
def rounds(identities: Identities) -> RemoteRounds:  # noqa: F811  (replaces the in-process one)
    return RemoteRounds(identities)


def test_the_contract_here_runs_remote(rounds) -> None:
    assert isinstance(rounds, RemoteRounds)
