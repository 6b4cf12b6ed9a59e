"""An active aggregator against `ckks` (bound to the roster, as every run and Flower
node binds it): the two attacks a review found (a lone ciphertext labelled as a sum,
the aggregator's own key in the key directory) are refused, and a search
over the aggregator's choices (which keys, keyholders, lists, ciphertexts, weights
and signatures it hands each client) finds no way to make a decryptor release
anything but the sum over one list that a majority of the participants signed.

Vectors are three reals on the small context (N=4096), flooding off (flood_bits 0:
a noise of about 1e-6), so a decryption is compared with the exact sum directly."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from protocols.ckks import CkksContext, CkksProtocol, signed
from protocols.ckks.messages import (
    DeliverSeed,
    KeyDirectory,
    ProposeContributors,
    RequestDecryption,
    ReturnDecryption,
    ShareSeed,
    SubmitCiphertext,
    pack,
    unpack,
)
from protocols.driver import run_round
from protocols.errors import ProtocolAbort
from protocols.hazmat.kex import AgreementKey
from protocols.messages import decode, encode
from protocols.roster import Identities
from protocols.stages import ClientInput, VectorSpec, make_setup

IDS = Identities.generate(["c0", "c1", "c2", "c3"])
CLIENTS = IDS.client_ids
AGG = IDS.aggregator_id
SMALL = {"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": [60, 49], "scale_bits": 36,
         "flood_bits": 0}
PROTOCOL = CkksProtocol(**SMALL).bind(IDS)
PUBLIC = CkksContext.public(PROTOCOL.ckks)
MAJORITY = signed.majority(len(CLIENTS))  # 3 of 4
INPUTS = {c: ClientInput(vector=np.array([1.0 + i, -2.0 * i, 0.25 * i]), weight=float(i + 1))
          for i, c in enumerate(CLIENTS)}


def _stream(label: str):
    counter = [0]

    def random_bytes(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{label}/{counter[0]}".encode()).digest()
            counter[0] += 1
        return out[:n]

    return random_bytes


def _exact(ids) -> np.ndarray:
    return sum(INPUTS[c].weight * INPUTS[c].vector for c in ids)


# -- attack (a): a lone ciphertext labelled as a sum ---------------------------------------
def _lone(m: RequestDecryption, blobs: dict[str, tuple[bytes, ...]],
          sigs: dict[str, bytes]) -> RequestDecryption:
    """The victim c1's ciphertext alone, under the list (c0, c1), to decryptor c0."""
    sizes, data = pack(blobs["c1"])
    return dataclasses.replace(m, contributors=("c0", "c1"), weights=np.array([2.0]),
                               ciphertext_signatures=sigs["c1"], sizes=sizes, data=data)


def _victim_in_own_slot(m, blobs, sigs):
    """The list as signed, but c0's slot holds the victim's ciphertext too."""
    sizes, data = pack(blobs["c1"] * 2 + blobs["c2"] + blobs["c3"])
    return dataclasses.replace(m, sizes=sizes, data=data)


def _two_of_four(m, blobs, sigs):
    """A list of c0 and the victim, with the signatures the aggregator has."""
    sizes, data = pack(blobs["c0"] + blobs["c1"])
    return dataclasses.replace(m, contributors=("c0", "c1"), signers=("c0", "c1"),
                               list_signatures=m.list_signatures[:128],
                               weights=np.array([1.0, 2.0]),
                               ciphertext_signatures=sigs["c0"] + sigs["c1"],
                               sizes=sizes, data=data)


@pytest.mark.parametrize("forge", [_lone, _victim_in_own_slot, _two_of_four])
def test_finding_a_a_decryptor_is_no_decryption_oracle(forge) -> None:
    blobs: dict[str, tuple[bytes, ...]] = {}
    sigs: dict[str, bytes] = {}
    replies: list[ReturnDecryption] = []

    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, SubmitCiphertext):
            blobs[msg.sender], sigs[msg.sender] = unpack(msg.sizes, msg.data), msg.signature
        if isinstance(msg, ReturnDecryption):
            replies.append(msg)
        if isinstance(msg, RequestDecryption) and msg.receiver == "c0":
            return encode(forge(msg, blobs, sigs))
        return data

    with pytest.raises(ProtocolAbort, match="c0 refuses"):
        run_round(PROTOCOL, round_index=0, inputs=INPUTS, identities=IDS, transcript=None,
                  tap=tap)
    assert replies == []  # no decryption was ever produced


# -- attack (b): the aggregator's key in the directory ---------------------------------------
ATTACKER = AgreementKey.generate()


def _advert_sig(signer: str, key: bytes, round_index: int = 0, client: str = "c1") -> bytes:
    return IDS.signing_key(signer).sign(signed.advert_statement(
        round_index=round_index, params_digest=PROTOCOL.params_digest, client_id=client,
        public_key=key))


SIGNATURES = {
    "c1's own, of its real key": None,  # kept from the honest directory
    "the aggregator's roster key": lambda: _advert_sig(AGG, ATTACKER.public_key),
    "a colluding client's roster key": lambda: _advert_sig("c2", ATTACKER.public_key),
    "c1's roster key, another round": lambda: _advert_sig("c1", ATTACKER.public_key, 1),
    "c1's roster key, named as c0": lambda: _advert_sig("c1", ATTACKER.public_key, 0, "c0"),
    "none": lambda: bytes(64),
}


@pytest.mark.parametrize("signature", list(SIGNATURES))
def test_finding_b_a_substituted_key_is_refused(signature: str) -> None:
    """The aggregator puts its own X25519 key under c1's name in the directory of c0
    (the keyholder) to open the seed c0 seals "to c1". c0 refuses before sealing."""
    sealed_by_c0: list[ShareSeed] = []

    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, ShareSeed) and msg.sender == "c0":
            sealed_by_c0.append(msg)
        if isinstance(msg, KeyDirectory) and msg.receiver == "c0":
            i = msg.clients.index("c1")
            keys, sigs = bytearray(msg.public_keys), bytearray(msg.signatures)
            keys[32 * i : 32 * (i + 1)] = ATTACKER.public_key
            make = SIGNATURES[signature]
            if make is not None:
                sigs[64 * i : 64 * (i + 1)] = make()
            return encode(dataclasses.replace(msg, public_keys=bytes(keys),
                                              signatures=bytes(sigs)))
        return data

    with pytest.raises(ProtocolAbort, match="key relayed for c1 is not signed"):
        run_round(PROTOCOL, round_index=0, inputs=INPUTS, identities=IDS, transcript=None,
                  tap=tap)
    assert sealed_by_c0 == []  # no seed was ever sealed to the attacker's key


def _setup():
    return make_setup(PROTOCOL, round_index=0, aggregator_id=AGG, participants=CLIENTS,
                      vector=VectorSpec(3, "float64"))


def _start(c: str):
    return PROTOCOL.client_start(setup=_setup(), client_id=c, client_input=INPUTS[c],
                                 random_bytes=_stream(c))


def _advertised():
    """Every client after AdvertiseKey, and the honest directory."""
    states, adverts = {}, {}
    for c in CLIENTS:
        states[c], (adverts[c],) = PROTOCOL.client_step("AdvertiseKey", _start(c), ())
    directory = KeyDirectory(
        round_index=0, sender=AGG, receiver="c0", clients=CLIENTS,
        public_keys=b"".join(adverts[c].public_key for c in CLIENTS),
        signatures=b"".join(adverts[c].signature for c in CLIENTS))
    return states, directory


ADVERTISED, DIRECTORY = _advertised()

_entry = st.one_of(
    st.just(("keep",)),
    st.tuples(st.just("attacker key"), st.sampled_from(list(SIGNATURES))),
    st.tuples(st.just("swap with"), st.sampled_from(CLIENTS)),
    st.just(("drop",)),
)


@settings(max_examples=80, deadline=None)
@given(receiver=st.sampled_from(CLIENTS), choices=st.tuples(*[_entry] * len(CLIENTS)))
def test_a_client_accepts_only_the_clients_own_signed_keys(receiver, choices) -> None:
    """Any mix of substituted, swapped, re-signed and dropped entries: a client either
    refuses the directory or holds exactly the keys the clients advertised."""
    true_keys = signed.split(DIRECTORY.public_keys, 32)
    true_sigs = signed.split(DIRECTORY.signatures, 64)
    ids, keys, sigs = [], [], []
    for i, (c, choice) in enumerate(zip(CLIENTS, choices, strict=True)):
        if choice[0] == "drop":
            continue
        key, sig = true_keys[i], true_sigs[i]
        if choice[0] == "attacker key":
            key = ATTACKER.public_key
            make = SIGNATURES[choice[1]]
            sig = make() if make is not None else sig
        elif choice[0] == "swap with":
            j = CLIENTS.index(choice[1])
            key, sig = true_keys[j], true_sigs[j]
        ids.append(c)
        keys.append(key)
        sigs.append(sig)
    msg = dataclasses.replace(DIRECTORY, receiver=receiver, clients=tuple(ids),
                              public_keys=b"".join(keys), signatures=b"".join(sigs))
    try:
        state, _ = PROTOCOL.client_step("KeyDirectory", ADVERTISED[receiver], [msg])
    except ProtocolAbort:
        return
    honest = dict(zip(CLIENTS, true_keys, strict=True))
    assert state.data.directory == tuple((c, honest[c]) for c in ids)
    assert len(ids) >= PROTOCOL.threshold(len(CLIENTS)) and receiver in ids


# -- the search over the decryption stage ----------------------------------------------------
def _submitted():
    """Both worlds the aggregator can choose at DeliverSeed: each client keyed by c0's
    seed or by c1's. Returns {keyholder: {client: (state, SubmitCiphertext)}}."""
    states = {}
    for c in CLIENTS:
        states[c], _ = PROTOCOL.client_step("KeyDirectory",
                                            ADVERTISED[c], [dataclasses.replace(
                                                DIRECTORY, receiver=c)])
    shares = {}
    for c in CLIENTS:
        states[c], (shares[c],) = PROTOCOL.client_step("ShareSeed", states[c], ())
    worlds = {}
    for keyholder in ("c0", "c1"):
        share = shares[keyholder]
        sealed = dict(zip(share.recipients, signed.split(share.sealed, len(share.sealed)
                                                          // len(share.recipients)),
                          strict=True))
        world = {}
        for c in CLIENTS:
            deliver = DeliverSeed(round_index=0, sender=AGG, receiver=c, keyholder=keyholder,
                                  sealed=sealed.get(c, b""))
            state, _ = PROTOCOL.client_step("DeliverSeed", states[c], [deliver])
            state, (sub,) = PROTOCOL.client_step("SubmitCiphertext", state, ())
            world[c] = (state, sub)
        worlds[keyholder] = world
    return worlds


WORLDS = _submitted()


def _blobs(sub: SubmitCiphertext) -> tuple[bytes, ...]:
    return unpack(sub.sizes, sub.data)


# A sorted list of one to four distinct clients.
ID_LISTS = st.lists(st.sampled_from(CLIENTS), min_size=1, max_size=4, unique=True).map(
    lambda ids: tuple(sorted(ids)))


@st.composite
def _proposal(draw, common: tuple[str, ...]):
    """What the aggregator proposes to one client: None (the client is dropped), the
    common list, or any other; with true digests, or one digest of another client's
    ciphertexts; naming the client's keyholder or the other one. Here and below the
    simplest draw (0, False, the first item) is the honest choice, so the search
    covers honest rounds as well as every deviation."""
    if draw(st.integers(0, 9)) == 9:
        return None
    ids = common if draw(st.integers(0, 3)) < 3 else draw(ID_LISTS)
    sources = {c: c for c in ids}
    if draw(st.integers(0, 5)) == 5:
        sources[draw(st.sampled_from(ids))] = draw(st.sampled_from(CLIENTS))
    keyholder = draw(st.sampled_from([None] * 8 + ["c0", "c1"]))  # None: the client's own
    return ids, sources, keyholder


@st.composite
def _slot(draw, x: str):
    """What the aggregator puts in contributor x's place: x's own ciphertexts, another
    client's, or a homomorphic sum of several (it can add, having no key)."""
    kind = draw(st.sampled_from(["own"] * 12 + ["other", "sum"]))
    if kind == "own":
        return (x,)
    if kind == "other":
        return (draw(st.sampled_from(CLIENTS)),)
    return draw(ID_LISTS)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_decryptor_releases_only_the_sum_over_one_majority_signed_list(data) -> None:
    # DeliverSeed: one keyholder for everyone, or the aggregator splits the clients.
    split = data.draw(st.integers(0, 3)) == 3
    keyholder_of = {c: data.draw(st.sampled_from(["c0", "c1"])) if split else "c0"
                    for c in CLIENTS}
    own = {c: WORLDS[keyholder_of[c]][c] for c in CLIENTS}  # (state, submission)
    # ProposeContributors: per client, and each signs what it accepts.
    common = data.draw(st.one_of(st.just(CLIENTS), ID_LISTS))
    signed_lists: dict[str, tuple[bytes, bytes]] = {}  # client -> (statement, signature)
    after_sign = {}
    for c in CLIENTS:
        proposal = data.draw(_proposal(common))
        if proposal is None:
            continue
        ids, sources, keyholder = proposal
        digests = [signed.ciphertext_digest(_blobs(own[sources[x]][1])) for x in ids]
        msg = ProposeContributors(round_index=0, sender=AGG, receiver=c,
                                  keyholder=keyholder or keyholder_of[c], contributors=ids,
                                  digests=b"".join(digests))
        try:
            state, _ = PROTOCOL.client_step("ProposeContributors", own[c][0], [msg])
        except ProtocolAbort:
            continue
        state, (sig,) = PROTOCOL.client_step("SignContributors", state, ())
        statement = signed.list_statement(round_index=0, params_digest=PROTOCOL.params_digest,
                                          keyholder=msg.keyholder, contributors=ids,
                                          digests=digests)
        signed_lists[c] = (statement, sig.signature)
        after_sign[c] = state
    if not after_sign:
        event("every client refused its list")
        return
    # RequestDecryption to one decryptor, built from everything the aggregator holds.
    # Mostly one that may decrypt (first on its list), else any that signed.
    firsts = [c for c in sorted(after_sign)
              if c in after_sign[c].data.signed_list[0][: PROTOCOL.ckks.decryptors]]
    decryptor = data.draw(st.sampled_from(firsts or sorted(after_sign))
                          if data.draw(st.integers(0, 3)) < 3
                          else st.sampled_from(sorted(after_sign)))
    mine = after_sign[decryptor].data.signed_list[0]
    contributors = mine if data.draw(st.integers(0, 3)) < 3 else data.draw(ID_LISTS)
    signers = tuple(sorted(signed_lists)) if not data.draw(st.booleans()) else tuple(sorted(
        data.draw(st.lists(st.sampled_from(sorted(signed_lists)), unique=True))))
    slots = {x: data.draw(_slot(x)) for x in contributors}
    blobs, weights, ct_sigs = [], [], []
    for x in contributors:
        terms = [_blobs(own[y][1]) for y in slots[x]]
        total = None
        for t in terms:
            total = PUBLIC.accumulate(total, PUBLIC.load(t))
        blobs.extend(terms[0] if len(terms) == 1 else PUBLIC.save(total))
        first = own[slots[x][0]][1]
        weights.append(first.weight if data.draw(st.integers(0, 11)) < 11 else first.weight + 1)
        ct_sigs.append(first.signature)
    sizes, payload = pack(blobs)
    request = RequestDecryption(
        round_index=0, sender=AGG, receiver=decryptor, contributors=contributors, decrypt=True,
        signers=signers, list_signatures=b"".join(signed_lists[s][1] for s in signers),
        weights=np.array(weights, dtype=np.float64), ciphertext_signatures=b"".join(ct_sigs),
        sizes=sizes, data=payload)
    try:
        state, _ = PROTOCOL.client_step("RequestDecryption", after_sign[decryptor], [request])
    except ProtocolAbort as exc:
        event(f"refused: {str(exc).split(': ', 1)[1][:40]}")
        return  # nothing released
    event("released")
    release = state.data.release
    # Released: it must be the sum over the list the decryptor signed, which a majority
    # signed word for word, every term a listed client's own ciphertext under one key.
    statement = signed_lists[decryptor][0]
    assert contributors == mine and len(contributors) >= PROTOCOL.min_survivors
    assert decryptor in contributors[: PROTOCOL.ckks.decryptors]
    assert sum(1 for s, _ in signed_lists.values() if s == statement) >= MAJORITY
    assert all(slots[x] == (x,) for x in contributors)
    assert len({keyholder_of[x] for x in contributors}) == 1
    np.testing.assert_allclose(release, _exact(contributors), rtol=0, atol=1e-3)


def test_the_search_harness_releases_the_honest_sum() -> None:
    """The honest path through the same harness: the property above is not vacuous."""
    world = WORLDS["c0"]
    digests = b"".join(signed.ciphertext_digest(_blobs(world[c][1])) for c in CLIENTS)
    after, sigs = {}, []
    for c in CLIENTS:
        msg = ProposeContributors(round_index=0, sender=AGG, receiver=c, keyholder="c0",
                                  contributors=CLIENTS, digests=digests)
        state, _ = PROTOCOL.client_step("ProposeContributors", world[c][0], [msg])
        after[c], (sig,) = PROTOCOL.client_step("SignContributors", state, ())
        sigs.append(sig.signature)
    sizes, payload = pack([b for c in CLIENTS for b in _blobs(world[c][1])])
    request = RequestDecryption(
        round_index=0, sender=AGG, receiver="c1", contributors=CLIENTS, decrypt=True,
        signers=CLIENTS[:MAJORITY], list_signatures=b"".join(sigs[:MAJORITY]),
        weights=np.array([world[c][1].weight for c in CLIENTS]),
        ciphertext_signatures=b"".join(world[c][1].signature for c in CLIENTS),
        sizes=sizes, data=payload)
    state, _ = PROTOCOL.client_step("RequestDecryption", after["c1"], [request])
    np.testing.assert_allclose(state.data.release, _exact(CLIENTS), rtol=0, atol=1e-3)
    # ... once: asked again in the same round, it refuses
    with pytest.raises(ProtocolAbort, match="at most once"):
        PROTOCOL.client_receive("RequestDecryption", state, [request])
    # ... and c2, third on the list, is no decryptor of it
    with pytest.raises(ProtocolAbort, match="first 2 contributors decrypt"):
        PROTOCOL.client_step("RequestDecryption", after["c2"],
                             [dataclasses.replace(request, receiver="c2")])


@pytest.mark.parametrize("field", ["round_index", "params_digest", "client_id", "keyholder",
                                   "weight", "digest"])
def test_a_ciphertext_signature_binds_every_field(field: str) -> None:
    base = {"round_index": 3, "params_digest": PROTOCOL.params_digest, "client_id": "c1",
            "keyholder": "c0", "weight": 2.0, "digest": bytes(32)}
    other = {"round_index": 4, "params_digest": "0" * 64, "client_id": "c2",
             "keyholder": "c1", "weight": 2.5, "digest": os.urandom(32)}
    sig = IDS.signing_key("c1").sign(signed.ciphertext_statement(**base))
    changed = {**base, field: other[field]}
    roster = IDS.roster()
    ok = signed.first_unsigned_ciphertext(
        roster, changed["round_index"], changed["params_digest"], changed["keyholder"],
        (changed["client_id"],), (changed["weight"],), (changed["digest"],), sig)
    assert ok is not None
    assert signed.first_unsigned_ciphertext(
        roster, 3, base["params_digest"], "c0", ("c1",), (2.0,), (bytes(32),), sig) is None
