"""Neighbour-only key routing: Merkle proofs bind (index, id, keys) to the root of the
whole key list, clients refuse anything else, an aggregator that routes different
lists (roots) to different clients is caught at the consistency stage, and a
client's RouteKeys grows with its degree, not with n."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.driver import run_round
from protocols.errors import ProtocolAbort
from protocols.messages import decode, encode, pack_ids
from protocols.roster import Identities
from protocols.secagg import SecAggProtocol, client, crypto, merkle
from protocols.secagg import server as srv
from protocols.secagg.messages import RouteKeys, ShareKeys, UnmaskRequest
from protocols.stages import ClientInput, make_setup

# -- the Merkle tree ---------------------------------------------------------------------------


@st.composite
def trees(draw):
    n = draw(st.integers(1, 70), label="n")
    leaves = [draw(st.binary(min_size=32, max_size=32)) for _ in range(n)]
    return leaves, draw(st.integers(0, n - 1), label="index")


@given(trees())
def test_every_leaf_has_a_proof_of_the_expected_length(case) -> None:
    leaves, i = case
    root = merkle.tree_root(leaves)
    proof = merkle.inclusion_proof(leaves, i)
    assert len(proof) == merkle.proof_length(i, len(leaves))
    assert merkle.verify_inclusion(leaves[i], i, len(leaves), proof, root)
    assert merkle.inclusion_proofs(leaves, [i]) == [proof]


@given(trees(), st.data())
def test_a_tampered_proof_index_size_leaf_or_root_does_not_verify(case, data) -> None:
    leaves, i = case
    n, root = len(leaves), merkle.tree_root(leaves)
    proof = list(merkle.inclusion_proof(leaves, i))
    how = data.draw(st.sampled_from(["hash", "index", "size", "leaf", "root", "short", "long"]))
    leaf, index, size = leaves[i], i, n
    if how == "hash":
        if not proof:
            return
        j = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        proof[j] = bytes(b ^ (1 << (bit % 8)) if k == bit // 8 else b
                         for k, b in enumerate(proof[j]))
    elif how == "index":
        index = data.draw(st.integers(0, n - 1).filter(lambda j: leaves[j] != leaf))
    elif how == "size":
        size = data.draw(st.integers(1, 2 * n + 2).filter(lambda m: m != n))
    elif how == "leaf":
        leaf = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b != leaves[i]))
    elif how == "root":
        root = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b != root))
    elif how == "short":
        if not proof:
            return
        proof = proof[:-1]
    else:
        proof = [*proof, data.draw(st.binary(min_size=32, max_size=32))]
    if how in ("index", "size") and leaves.count(leaf) > 1:
        return
    assert not merkle.verify_inclusion(leaf, index, size, proof, root)


def test_leaves_bind_index_id_and_every_key() -> None:
    k = [os.urandom(32) for _ in range(3)]
    base = merkle.leaf_hash(3, "c3", *k)
    assert len({base, merkle.leaf_hash(4, "c3", *k), merkle.leaf_hash(3, "c4", *k),
                merkle.leaf_hash(3, "c3", k[1], k[0], k[2]),
                merkle.leaf_hash(3, "c3", k[0], k[1], os.urandom(32))}) == 5
    # A leaf, an inner node and a root are hashed under different prefixes, and the
    # root names the number of leaves.
    pair = [merkle.leaf_hash(i, f"c{i}", *k) for i in range(2)]
    assert merkle.tree_root(pair) not in pair and merkle.tree_root(pair[:1]) != pair[0]


# -- clients refuse what the proofs do not bind -------------------------------------------------

N, DEGREE = 12, 4


def _round(n: int = N, degree: int = DEGREE, identities: Identities | None = None):
    """Clients that advertised, the aggregator after receive_keys, and its RouteKeys."""
    ids_ = identities or Identities.generate([f"c{i:03d}" for i in range(n)])
    protocol = SecAggProtocol(degree=degree).bind(ids_)
    setup = make_setup(protocol, round_index=0, aggregator_id=ids_.aggregator_id,
                       participants=ids_.client_ids,
                       vector=ClientInput(vector=np.zeros(4), weight=1.0).spec)
    states = {c: protocol.client_start(setup=setup, client_id=c,
                                       client_input=ClientInput(vector=np.zeros(4), weight=1.0),
                                       random_bytes=os.urandom)
              for c in ids_.client_ids}
    adverts = [client.advertise(s.data, ids_, ids_.aggregator_id) for s in states.values()]
    data = srv.ServerData(ctx=protocol._context(setup))
    data, bad = srv.receive_keys(data, adverts, ids_.roster())
    assert not bad
    keyed = data
    data, routed = srv.route_keys(data, ids_.client_ids, ids_.aggregator_id)
    return ids_, states, keyed, data, {m.receiver: m for m in routed}


def _take(ids_, states, msg):
    st_ = states[msg.receiver].data
    return client.receive_route(st_, [decode(encode(msg))], identities=ids_,
                                participants=ids_.client_ids)


@pytest.fixture(scope="module")
def routed_round():
    return _round()


def test_each_client_gets_exactly_its_neighbours_and_accepts(routed_round) -> None:
    ids_, states, _, data, msgs = routed_round
    for c, msg in msgs.items():
        assert tuple(msg.routed) == tuple(sorted(data.graph[c] | {c}))
        got = _take(ids_, states, msg)
        assert got.graph == data.graph and set(got.keys) == set(msg.routed)
        assert got.commitment == data.commitment


def _swap(msg: RouteKeys, a: int, b: int) -> RouteKeys:
    """Entries a and b of the routed keys exchanged, proofs and signatures kept in place."""
    def sw(blob: bytes, size: int) -> bytes:
        parts = crypto.chunks(blob, size)
        parts[a], parts[b] = parts[b], parts[a]
        return b"".join(parts)
    return dataclasses.replace(msg, c_pks=sw(msg.c_pks, 32), s_pks=sw(msg.s_pks, 32),
                               e_pks=sw(msg.e_pks, 32), id_sigs=sw(msg.id_sigs, 64))


def _edits(msg: RouteKeys, me: str, data) -> dict[str, RouteKeys]:
    routed = tuple(msg.routed)
    other = next(i for i, c in enumerate(routed) if c != me)
    outside = sorted(set(data.ids) - set(routed))[0]
    n, index = len(data.ids), {c: i for i, c in enumerate(data.ids)}
    proofs = crypto.chunks(msg.proofs, 32)
    second = next(i for i, c in enumerate(routed) if c != me and i != other)
    return {
        "proof withheld": dataclasses.replace(msg, proofs=b""),
        "proof truncated": dataclasses.replace(msg, proofs=msg.proofs[:-32]),
        "proof altered": dataclasses.replace(
            msg, proofs=b"".join([*proofs[:-1], bytes(32)])),
        "another root": dataclasses.replace(msg, root=os.urandom(32)),
        # each keeps its place's proof: valid proofs, for the other index
        "keys swapped between indices": _swap(msg, other, second),
        "a neighbour left out": dataclasses.replace(
            msg, routed=tuple(c for c in routed if c != routed[other]),
            c_pks=b"".join(p for i, p in enumerate(crypto.chunks(msg.c_pks, 32)) if i != other),
            s_pks=b"".join(p for i, p in enumerate(crypto.chunks(msg.s_pks, 32)) if i != other),
            e_pks=b"".join(p for i, p in enumerate(crypto.chunks(msg.e_pks, 32)) if i != other),
            id_sigs=b"".join(p for i, p in enumerate(crypto.chunks(msg.id_sigs, 64))
                             if i != other),
            proofs=b"".join(b"".join(proofs[sum(merkle.proof_length(index[c], n) for c in routed[:j]):
                                   sum(merkle.proof_length(index[c], n)
                                       for c in routed[:j + 1])])
                            for j, c in enumerate(routed) if j != other)),
        "a non-neighbour added": dataclasses.replace(msg, routed=tuple(sorted((*routed,
                                                                             outside)))),
        "ids re-ordered": dataclasses.replace(msg, ids=tuple(reversed(data.ids))),
    }


@pytest.mark.parametrize("how", ["proof withheld", "proof truncated", "proof altered",
                                 "another root", "keys swapped between indices",
                                 "a neighbour left out", "a non-neighbour added",
                                 "ids re-ordered"])
def test_a_client_refuses_keys_its_proofs_do_not_bind(routed_round, how) -> None:
    ids_, states, _, data, msgs = routed_round
    me = data.ids[0]
    msg = _edits(msgs[me], me, data)[how]
    with pytest.raises(ProtocolAbort, match=f"{me} refuses"):
        _take(ids_, states, msg)


def test_a_replayed_route_for_another_client_is_refused(routed_round) -> None:
    ids_, states, _, data, msgs = routed_round
    a = data.ids[0]
    b = next(c for c in data.ids if c != a and c not in data.graph[a])
    with pytest.raises(ProtocolAbort, match="refuses"):
        _take(ids_, states, dataclasses.replace(msgs[b], receiver=a))


# -- equivocation about the key list is caught at the consistency stage ---------------------

IDS7 = Identities.generate([f"h{i}" for i in range(7)])
LEFT_OUT = "h6"
SHOWN_SHORT = {"h0", "h1", "h2"}


class TwoKeyLists(SecAggProtocol):
    """Routes h0-h2 a key list without h6 (another root) and the others the full list;
    keeps its own state on the short list and ignores the shares addressed to h6."""

    def server_send(self, stage, state):
        if stage != "RouteKeys":
            return super().server_send(stage, state)
        data, agg = state.data, state.setup.aggregator_id
        short_data, short = srv.route_keys(data, [c for c in state.active if c != LEFT_OUT], agg)
        _, full = srv.route_keys(data, state.active, agg)
        out = tuple(m for m in short if m.receiver in SHOWN_SHORT) + tuple(
            m for m in full if m.receiver not in SHOWN_SHORT)
        return dataclasses.replace(state, data=short_data), out


def test_different_key_lists_to_different_clients_are_caught_at_the_consistency_stage():
    seen: list[str] = []
    signed: dict[str, bytes] = {}

    def tap(stage, data):
        seen.append(stage)
        msg = decode(data)
        if isinstance(msg, ShareKeys) and LEFT_OUT in msg.receivers:
            keep = [i for i, c in enumerate(msg.receivers) if c != LEFT_OUT]
            parts = crypto.chunks(msg.sealed, crypto.SEALED_BYTES)
            return encode(dataclasses.replace(
                msg, receivers=tuple(msg.receivers[i] for i in keep),
                sealed=b"".join(parts[i] for i in keep)))
        if stage == "ConsistencySign" and msg.signature:
            signed[msg.sender] = msg.signature
        return data

    inputs = {c: ClientInput(vector=np.ones(8), weight=1.0) for c in IDS7.client_ids}
    protocol = TwoKeyLists(degree=6).bind(IDS7)
    with pytest.raises(ProtocolAbort) as caught:
        run_round(protocol, round_index=0, inputs=inputs, identities=IDS7, transcript=None,
                  tap=tap)
    # Everyone but h6 signed the same survivor list, under two commitments: the
    # aggregator (on the short list) counts only h0-h2, below the quorum of 4, and
    # nothing was unmasked.
    assert "ConsistencySign" in str(caught.value)
    assert set(signed) == set(IDS7.client_ids) - {LEFT_OUT}
    assert "Unmask" not in seen and "Release" not in seen


def test_a_client_refuses_signatures_made_over_another_key_list():
    """The aggregator hands a client routed the full list the signatures of clients
    routed the short one: they sign another commitment and do not verify."""
    ids_, states, keyed, data, msgs = _round(n=7, degree=6, identities=IDS7)
    short_data, short = srv.route_keys(keyed, [c for c in IDS7.client_ids if c != LEFT_OUT],
                                       IDS7.aggregator_id)
    assert short_data.commitment != data.commitment
    me = "h5"
    st_ = _take(ids_, states, msgs[me])
    listed = tuple(c for c in IDS7.client_ids if c != LEFT_OUT)
    st_ = dataclasses.replace(st_, signed_list=listed, masked_with=tuple(
        sorted(st_.graph[me] - {LEFT_OUT})), held={c: (1, 1) for c in listed})
    statement = crypto.consistency_statement(round_index=0, masked_senders=listed,
                                             commitment=short_data.commitment)
    signers = listed[:5]
    sigs = b"".join(IDS7.signing_key(c).sign(statement) for c in signers)
    attest = [IDS7.signing_key(c).sign(crypto.missing_statement(
        round_index=0, client_id=c, missing=())) for c in listed]
    request = UnmaskRequest(round_index=0, sender=IDS7.aggregator_id, receiver=me,
                            included=listed, dropped=(), signed_list=listed, signers=signers,
                            signatures=sigs, missing=tuple("" for _ in listed),
                            missing_sigs=b"".join(attest))
    with pytest.raises(ProtocolAbort, match="consistency signature is invalid"):
        client.receive_unmask_request(st_, [request], consistency=True)
    # Signed over the client's own commitment, the same request is accepted.
    own = crypto.consistency_statement(round_index=0, masked_senders=listed,
                                       commitment=st_.commitment)
    ok = dataclasses.replace(request, signatures=b"".join(IDS7.signing_key(c).sign(own)
                                                          for c in signers))
    assert client.receive_unmask_request(st_, [ok], consistency=True).included == listed


# -- RouteKeys grows with the degree, not with n -----------------------------------------------


def _route_bytes(n: int, degree: int) -> tuple[int, int]:
    """(largest RouteKeys a client is sent, bytes of its id list) at n clients."""
    ids_, states, _, _, msgs = _round(n=n, degree=degree)
    for msg in list(msgs.values())[:3]:
        _take(ids_, states, msg)  # accepted as routed
    return max(len(encode(m)) for m in msgs.values()), len(pack_ids(ids_.client_ids))


def test_route_keys_per_client_grows_with_the_degree_not_with_n() -> None:
    k = 10
    small, small_ids = _route_bytes(50, k)
    large, large_ids = _route_bytes(200, k)
    # Beyond the id list (O(n), a few bytes a client) only the proofs grow, by 32
    # bytes per routed key and tree level: depth 5-6 at n = 50, 7-8 at n = 200 (and
    # a few digits of the header's sizes).
    assert large - small <= (large_ids - small_ids) + (k + 1) * 32 * 3 + 16
    # What a full key list would cost at n = 200: three keys and a signature each.
    assert large < 200 * (3 * 32 + 64) / 2


# -- the reviewer checks every leaf -------------------------------------------------------------


def test_the_reviewer_checks_the_root_against_every_advertised_key(tmp_path, monkeypatch):
    """Clients check their neighbours' leaves only; with payloads stored, the reviewer
    recomputes the root from every client's signed advert (and names a mismatch)."""
    from protocols.secagg import audit
    from protocols.transcript import TranscriptWriter, verify_transcript

    ids_ = Identities.generate([f"c{i:03d}" for i in range(N)])
    protocol = SecAggProtocol(degree=DEGREE).bind(ids_)
    inputs = {c: ClientInput(vector=np.ones(4), weight=1.0) for c in ids_.client_ids}
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=ids_, protocol=protocol,
                               store_payloads=True) as tw:
        run_round(protocol, round_index=0, inputs=inputs, identities=ids_, transcript=tw,
                  dropouts={"c005": "MaskedInput"})
    report = verify_transcript(path, ids_.roster())
    assert report.ok and report.replayed_rounds == 1, report.problems
    real = merkle.key_list_root
    monkeypatch.setattr(audit.merkle, "key_list_root",
                        lambda ids, c, s, e: real(ids, c, s, e[:-1] + b"\x00"))
    report = verify_transcript(path, ids_.roster())
    assert not report.ok and "not the tree over the keys" in str(report.problems)
