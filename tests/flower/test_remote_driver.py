"""The remote round driver and client nodes without Flower: requests go straight to
`ClientNode.handle` (through a deep copy, as over a wire), so dropouts, aborts and
forgeries are checked in seconds. The Flower deployment is test_flower_secagg.py."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from protocols import (
    Identities,
    ProtocolAbort,
    check_against_plain,
    make_protocol,
    run_round,
    verify_transcript,
)
from protocols.hazmat.signing import SigningKey
from protocols.remote import PartyIdentities, SignedRecordWriter
from protocols.stages import VectorSpec, make_setup
from securediff.flower.driver import run_remote_round
from securediff.flower.exchange import setup_json
from securediff.flower.inputs import seeded_vector, seeded_vectors
from securediff.flower.node import ClientNode

CLIENTS = [f"client-{i:02d}" for i in range(4)]
SEED, LENGTH = 5, 300


@pytest.fixture()
def world(tmp_path):
    keys = {p: SigningKey.generate() for p in [*CLIENTS, "aggregator"]}
    identities = Identities(keys, aggregator_id="aggregator")
    roster = identities.roster()
    me = PartyIdentities(roster, party="aggregator", key=keys["aggregator"])
    nodes = {c: ClientNode(identities=PartyIdentities(roster, party=c, key=keys[c]),
                           inputs=seeded_vectors(SEED, c), state={}, insecure_seed=SEED)
             for c in CLIENTS}
    return identities, roster, me, nodes, tmp_path / "transcript.jsonl"


def _exchange(nodes, *, lost=(), at=None, tamper=None):
    """Deliver requests; clients in `lost` stop answering from request kind/stage `at` on."""
    gone: set[str] = set()

    def exchange(requests):
        replies = {}
        for cid, req in requests.items():
            if cid in lost and at in (req.get("stage"), req["kind"]):
                gone.add(cid)
            if cid in gone:
                continue
            reply = nodes[cid].handle(copy.deepcopy(req))
            replies[cid] = tamper(cid, req, reply) if tamper else reply
        return replies

    return exchange


def _run(protocol_name, world, rounds, faults=None):
    kw = faults or {}
    identities, roster, me, nodes, path = world
    protocol = make_protocol(protocol_name).bind(me)
    writer = SignedRecordWriter.open(path, identities=me, protocol=protocol,
                                     store_payloads=True, planned_rounds=(0, rounds))
    results = []
    try:
        for r in range(rounds):
            try:
                results.append(run_remote_round(
                    protocol, round_index=r, participants=CLIENTS,
                    vector_spec=VectorSpec(LENGTH, "float32"), identities=me, transcript=writer,
                    exchange=_exchange(nodes, **kw.get(r, {}))))
            except ProtocolAbort as exc:
                results.append(exc)
    finally:
        writer.close()
    return results, verify_transcript(path, roster)


@pytest.mark.parametrize("protocol_name", ["secagg", "plain"])
def test_rounds_match_the_simulation_and_verify(world, protocol_name):
    stage = "ShareKeys" if protocol_name == "secagg" else "SubmitUpdate"
    results, report = _run(protocol_name, world, 2, {1: {"lost": ("client-02",), "at": stage}})
    assert report.ok, report.problems
    assert report.rounds == 2 and report.replayed_rounds == (2 if protocol_name == "secagg" else 0)
    identities = world[0]
    for r, res in enumerate(results):
        inputs = {c: seeded_vector(SEED, c, r, LENGTH) for c in CLIENTS}
        drop = {"client-02": stage} if r == 1 else None
        sim = run_round(make_protocol(protocol_name).bind(identities), round_index=r,
                        inputs=inputs, identities=identities, transcript=None, dropouts=drop)
        assert res.contributors == sim.contributors
        check = check_against_plain(make_protocol(protocol_name), inputs, res)
        assert check["ok"], check
        assert np.abs(res.weighted_sum - sim.weighted_sum).max() <= 2 * check["tolerance"]
    assert results[1].dropped == ("client-02",)
    assert "no reply in" in results[1].stats["drop_reasons"]["client-02"]


def test_below_threshold_aborts_and_the_transcript_says_so(world):
    results, report = _run("secagg", world, 1,
                           {0: {"lost": ("client-00", "client-01"), "at": "MaskedInput"}})
    assert isinstance(results[0], ProtocolAbort)
    assert report.ok and report.aborted_rounds == 1 and report.rounds == 0


def test_a_node_lost_at_the_close_is_dropped_and_may_rejoin(world):
    results, report = _run("secagg", world, 2, {0: {"lost": ("client-01",), "at": "close"}})
    assert report.ok, report.problems
    assert results[0].survivors == ("client-00", "client-02", "client-03")
    # It left after the sum was fixed: still a contributor, as in the simulation.
    assert "client-01" in results[0].contributors
    # Back in round 1: its unwritten co-signature does not break its chain.
    assert results[1].survivors == tuple(CLIENTS)


def test_a_forged_record_drops_its_sender_only(world):
    def tamper(cid, req, reply):
        if cid == "client-03" and req.get("stage") == "AdvertiseKeys":
            rec = json.loads(reply["record"])
            rec["receiver"] = "client-00"
            return {**reply, "record": json.dumps(rec)}
        return reply

    results, report = _run("secagg", world, 1, {0: {"tamper": tamper}})
    assert report.ok, report.problems
    assert results[0].dropped == ("client-03",)
    assert "unusable reply" in results[0].stats["drop_reasons"]["client-03"]


def test_a_node_refuses_a_chain_head_it_did_not_sign(world):
    _, _, _, nodes, _ = world
    _run("secagg", world, 1)
    protocol = make_protocol("secagg")
    setup = make_setup(protocol, round_index=1, aggregator_id="aggregator", participants=CLIENTS,
                       vector=VectorSpec(LENGTH, "float32"))
    node = nodes["client-00"]
    request = {"kind": "step", "round": 1, "session": 0, "setup": setup_json(protocol, setup),
               "deliver_stages": [], "deliver_payloads": [], "stage": "AdvertiseKeys",
               "head_seq": 2, "head_digest": "0" * 64}
    with pytest.raises(ProtocolAbort, match="chain head"):
        node.handle(request)


def test_hello_proves_the_roster_key(world):
    _, roster, _, nodes, _ = world
    from protocols.hazmat.signing import verify_signature
    from securediff.flower.exchange import HELLO_DOMAIN

    reply = nodes["client-01"].handle({"kind": "hello", "nonce": b"n" * 32})
    assert reply["client_id"] == "client-01"
    assert verify_signature(public_key=roster.public_key("client-01"),
                            message=HELLO_DOMAIN + b"n" * 32 + b"client-01", signature=reply["sig"])


def test_a_node_refuses_the_greeting_of_an_aggregator_on_another_release(world):
    """Each party runs its own installation (cli/flower_app.py): a node on another
    securediff release refuses at the greeting, naming both versions."""
    _, _, _, nodes, _ = world
    from protocols.errors import ProtocolInputError
    from securediff.flower.exchange import installed_version

    with pytest.raises(ProtocolInputError, match=r"securediff 0\.0\.0-other.*this node"):
        nodes["client-01"].handle({"kind": "hello", "nonce": b"n" * 32, "securediff": "0.0.0-other"})
    same = nodes["client-01"].handle({"kind": "hello", "nonce": b"n" * 32,
                                      "securediff": installed_version()})
    assert same["client_id"] == "client-01"
