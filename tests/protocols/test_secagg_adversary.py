"""An active aggregator: equivocation, both-shares requests, forged or substituted
keys, replays and tampering are refused by honest clients or caught in the
transcript, and never yield both secrets of one client."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from protocols.driver import run_round
from protocols.errors import ProtocolAbort, ProtocolError
from protocols.hazmat.prg import prg_stream
from protocols.hazmat.shamir import SHARE_BYTES, ShamirError, decode_share, reconstruct
from protocols.hazmat.signing import SigningKey
from protocols.messages import decode, encode
from protocols.roster import Identities
from protocols.secagg import SecAggProtocol, crypto, merkle
from protocols.secagg.audit import transcript_meta
from protocols.secagg.context import round_context
from protocols.secagg.graph import harary_graph, shareholder_x
from protocols.secagg.messages import AdvertiseKeys, ForwardShares, RouteKeys, Unmask
from protocols.secagg.params import SecAggParams
from protocols.stages import ClientInput, make_setup
from protocols.transcript import TranscriptWriter, verify_transcript

IDS = Identities.generate([f"h{i}" for i in range(7)])
VICTIM = "h3"


def _inputs(seed: int = 0) -> dict[str, ClientInput]:
    gen = np.random.default_rng(seed)
    return {c: ClientInput(vector=gen.normal(size=8), weight=1.0) for c in IDS.client_ids}


class Equivocating(SecAggProtocol):
    """Tells half of the victim's shareholders it was included and the rest it dropped,
    hoping to collect t shares of its self-mask seed and t of its mask key."""

    def server_send(self, stage, state):
        state, out = super().server_send(stage, state)
        if stage != "UnmaskRequest":
            return state, out
        liars = sorted(c for c in state.data.graph[VICTIM])[::2]
        forged = []
        for msg in out:
            if msg.receiver in liars:
                sig = crypto.chunks(msg.signatures, 64)
                keep = [i for i, c in enumerate(msg.included) if c != VICTIM]
                attest = crypto.chunks(msg.missing_sigs, 64)
                signers = [i for i, c in enumerate(msg.signers) if c != VICTIM]
                msg = dataclasses.replace(
                    msg,
                    included=tuple(msg.included[i] for i in keep),
                    dropped=tuple(sorted((*msg.dropped, VICTIM))),
                    signers=tuple(msg.signers[i] for i in signers),
                    signatures=b"".join(sig[i] for i in signers) if sig else b"",
                    missing=tuple(msg.missing[i] for i in keep),
                    missing_sigs=b"".join(attest[i] for i in keep),
                )
            forged.append(msg)
        return state, tuple(forged)


class ShareCounter:
    def __init__(self) -> None:
        self.b: list[tuple[int, int]] = []
        self.sk: list[tuple[int, int]] = []
        self.xs: dict[str, int] = {}

    def __call__(self, stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, RouteKeys):
            self.xs = shareholder_x(msg.ids)
        if isinstance(msg, Unmask):
            for owners, blob, into in ((msg.b_owners, msg.b_shares, self.b),
                                       (msg.sk_owners, msg.sk_shares, self.sk)):
                for owner, share in zip(owners, crypto.chunks(blob, SHARE_BYTES), strict=True):
                    if owner == VICTIM:
                        into.append((self.xs[msg.sender], decode_share(share)))
        return data


@pytest.mark.parametrize("consistency", [False, True])
def test_equivocation_never_yields_both_secrets_and_is_caught(tmp_path: Path,
                                                              consistency: bool) -> None:
    protocol = Equivocating(consistency_check=consistency, degree=6)
    t = protocol.threshold(7)
    counter = ShareCounter()
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=IDS, protocol=protocol) as tw:
        try:
            run_round(protocol, round_index=0, inputs=_inputs(), identities=IDS, transcript=tw,
                      tap=counter)
        except ProtocolAbort:
            pass  # the aggregator's own unmasking fails: it did not get what it needed
    messages = [p.message for p in verify_transcript(path, IDS.roster()).problems]
    assert any(f"{VICTIM} is listed as included to some clients and as dropped" in m
               for m in messages)
    if consistency:  # a list other than the signed one is refused before any reveal
        assert not counter.sk
        return
    assert counter.b and counter.sk  # it did get some of each kind...
    assert min(len(counter.b), len(counter.sk)) < t  # ...but never t of both
    with pytest.raises(ShamirError):
        reconstruct(counter.b if len(counter.b) < t else counter.sk, threshold=t)
    assert any(f"both-shares rule: shares of both secrets of {VICTIM}" in m for m in messages)


class Forger(SecAggProtocol):
    """Rewrites every unmasking request with `edit(msg) -> msg`."""

    edit = staticmethod(lambda msg: msg)

    def server_send(self, stage, state):
        state, out = super().server_send(stage, state)
        if stage == "UnmaskRequest":
            out = tuple(self.edit(m) for m in out)
        return state, out


def _run_forged(edit, *, consistency=True, dropouts=None):
    protocol = Forger(consistency_check=consistency, degree=6)
    protocol.edit = staticmethod(edit)
    run_round(protocol, round_index=0, inputs=_inputs(), identities=IDS, transcript=None,
              dropouts=dropouts or {})


def test_asking_for_both_shares_in_one_request_is_refused() -> None:
    def both(msg):
        return dataclasses.replace(msg, dropped=tuple(sorted((*msg.dropped, VICTIM))))

    with pytest.raises(ProtocolAbort, match=f"{VICTIM} is listed both as included and"):
        _run_forged(both, consistency=False)


def test_a_signer_whose_signature_is_forged_is_refused() -> None:
    """The victim sent its masked input (so it is on L) but never signed: claiming its
    signature to reach the quorum fails."""

    def claim_victim_signed(msg):
        sigs = dict(zip(msg.signers, crypto.chunks(msg.signatures, 64), strict=True))
        sigs[VICTIM] = b"\x00" * 64
        signers = tuple(sorted(sigs))
        return dataclasses.replace(msg, signers=signers,
                                   signatures=b"".join(sigs[c] for c in signers))

    with pytest.raises(ProtocolAbort, match=f"{VICTIM}'s consistency signature is invalid"):
        _run_forged(claim_victim_signed, dropouts={VICTIM: "ConsistencySign"})


def test_too_few_signers_for_one_list_to_be_unique_are_refused() -> None:
    def keep_three(msg):
        sigs = crypto.chunks(msg.signatures, 64)
        return dataclasses.replace(msg, signers=msg.signers[:3], signatures=b"".join(sigs[:3]))

    with pytest.raises(ProtocolAbort, match="below the quorum of 4"):
        _run_forged(keep_three)


def test_a_survivor_list_other_than_the_signed_one_is_refused() -> None:
    def other_list(msg):
        return dataclasses.replace(msg, signed_list=tuple(msg.signed_list[:-1]))

    with pytest.raises(ProtocolAbort, match="differs from the one I signed"):
        _run_forged(other_list)


def _fixed_bytes():
    """The same injected randomness for two runs: the same keys, hence the same graph."""
    return prg_stream(b"\x42" * 32, nonce=b"adversary-test")


def _graph_of(protocol, ids, inputs):
    routed = []

    def tap(stage, data):
        msg = decode(data)
        if isinstance(msg, RouteKeys) and not routed:
            seed = bytes.fromhex(transcript_meta(msg)["graph_seed"])
            routed.append(harary_graph(msg.ids, degree=msg.degree, seed=seed))
        return data

    run_round(protocol, round_index=0, inputs=inputs, identities=ids, transcript=None, tap=tap,
              random_bytes=_fixed_bytes())
    return routed[0]


def test_a_disconnected_survivor_graph_is_refused() -> None:
    ids = Identities.generate([f"r{i}" for i in range(8)])
    inputs = {c: ClientInput(vector=np.ones(3), weight=1.0) for c in ids.client_ids}
    protocol = SecAggProtocol(degree=2, threshold=2, consistency_check=False)
    graph = _graph_of(protocol, ids, inputs)
    a = ids.client_ids[0]
    b = next(c for c in ids.client_ids if c != a and c not in graph[a])
    # on a ring, two non-adjacent clients dropping before MaskedInput cut it in two arcs
    with pytest.raises(ProtocolAbort, match="disconnected"):
        run_round(protocol, round_index=0, inputs=inputs, identities=ids, transcript=None,
                  dropouts={a: "MaskedInput", b: "MaskedInput"}, random_bytes=_fixed_bytes())


def test_a_second_unmasking_request_or_an_out_of_order_message_is_refused() -> None:
    protocol = SecAggProtocol(consistency_check=False, degree=6)
    inputs = _inputs()
    cid = "h5"
    inbox: dict[str, list] = {}

    def keep(stage, data):
        msg = decode(data)
        if msg.receiver == cid:
            inbox.setdefault(stage, []).append(msg)
        return data

    run_round(protocol, round_index=0, inputs=inputs, identities=IDS, transcript=None,
              tap=keep, random_bytes=_fixed_bytes())
    # replay h5's own state machine on the same randomness, up to the unmasking request
    setup = make_setup(protocol, round_index=0, aggregator_id=IDS.aggregator_id,
                       participants=IDS.client_ids, vector=inputs[cid].spec)
    rb = _fixed_bytes()
    states = {c: protocol.client_start(setup=setup, client_id=c, client_input=inputs[c],
                                       random_bytes=rb) for c in setup.participants}
    state = states[cid]
    for spec in protocol.stages[: [s.name for s in protocol.stages].index("UnmaskRequest")]:
        state, _ = protocol.client_step(spec.name, state, inbox.get(spec.name, []))
    (request,) = inbox["UnmaskRequest"]
    answered, _ = protocol.client_step("UnmaskRequest", state, [request])  # the honest path
    assert answered.data.reveal_b and not set(answered.data.reveal_b) & set(
        answered.data.reveal_sk)
    with pytest.raises(ProtocolAbort, match="unexpected message"):
        protocol.client_step("UnmaskRequest", state, [request, request])
    with pytest.raises(ProtocolError, match="next stage is 'UnmaskRequest'"):
        protocol.client_step("Unmask", state, ())
    later, _ = protocol.client_step("Unmask", answered, ())
    with pytest.raises(ProtocolError, match="next stage is 'Release'"):
        protocol.client_step("UnmaskRequest", later, [request])


def _tamper(kind, edit, *, bound=True, who="h1", receiver=None, binding=None):
    protocol = SecAggProtocol(degree=6)
    protocol = protocol.bind(IDS) if bound else protocol

    def tap(stage, data):
        msg = decode(data)
        if isinstance(msg, kind) and (msg.sender == who or msg.receiver == receiver):
            return encode(edit(msg))
        return data

    return run_round(protocol, round_index=0, inputs=_inputs(), identities=IDS,
                     transcript=None, tap=tap, binding=binding)


def test_substituted_keys_are_refused_when_keys_are_signed() -> None:
    def swap(msg):
        attacker = crypto.agreement_key(b"\x99" * 32).public_key
        i = msg.routed.index("h1")
        c = bytearray(msg.c_pks)
        c[32 * i : 32 * (i + 1)] = attacker
        return dataclasses.replace(msg, c_pks=bytes(c))

    with pytest.raises(ProtocolAbort, match="keys relayed for h1 are not signed"):
        _tamper(RouteKeys, swap, who="", receiver="h2")


def protocol_digest(binding: str = "", **params) -> str:
    return round_context(params=SecAggParams(**{"degree": 6, **params}), round_index=0, n=7,
                         length=8, dtype="float64", binding=binding).params_digest


def test_an_advert_signed_for_other_parameters_is_refused() -> None:
    """A roster-signed advert binds the round's parameters: replayed into a round with
    another floor or graph, it does not verify."""

    def replay_for_other_params(msg):
        statement = crypto.advertise_statement(round_index=0, client_id="h1", c_pk=msg.c_pk,
                                               s_pk=msg.s_pk, e_pk=msg.e_pk,
                                               params=protocol_digest(min_contributors=3))
        return dataclasses.replace(msg, id_sig=IDS.signing_key("h1").sign(statement))

    assert "h1" in _tamper(AdvertiseKeys, replay_for_other_params).dropped


def test_an_advert_of_another_run_or_session_is_refused() -> None:
    """The same round index and parameters in another run: the advert names that run."""

    def replay_from_run_a(msg):
        statement = crypto.advertise_statement(round_index=0, client_id="h1", c_pk=msg.c_pk,
                                               s_pk=msg.s_pk, e_pk=msg.e_pk,
                                               params=protocol_digest(binding="run A, session 0"))
        return dataclasses.replace(msg, id_sig=IDS.signing_key("h1").sign(statement))

    run_b = "run B, session 0"
    assert "h1" in _tamper(AdvertiseKeys, replay_from_run_a, binding=run_b).dropped
    assert not _tamper(AdvertiseKeys, lambda m: m, binding=run_b).dropped


def test_keys_signed_wrongly_or_by_a_key_outside_the_roster_drop_the_sender() -> None:
    outsider = SigningKey.generate()

    def resign(msg):
        statement = crypto.advertise_statement(round_index=0, client_id="h1", c_pk=msg.c_pk,
                                               params=protocol_digest(),
                                               s_pk=msg.s_pk, e_pk=msg.e_pk)
        return dataclasses.replace(msg, id_sig=outsider.sign(statement))

    result = _tamper(AdvertiseKeys, resign)
    assert "h1" in result.dropped
    result = _tamper(AdvertiseKeys, lambda m: dataclasses.replace(m, id_sig=b"\x01" * 64),
                     who="h2")
    assert "h2" in result.dropped


def test_a_tampered_or_replayed_share_is_refused() -> None:
    def flip(msg):
        sealed = bytearray(msg.sealed)
        sealed[20] ^= 1
        return dataclasses.replace(msg, sealed=bytes(sealed))

    with pytest.raises(ProtocolAbort, match="do not open"):
        _tamper(ForwardShares, flip, who="", receiver="h4")

    recorded = {}

    def record(stage, data):
        msg = decode(data)
        if isinstance(msg, ForwardShares) and msg.receiver == "h4":
            recorded["old"] = data
        return data

    protocol = SecAggProtocol(degree=6)
    run_round(protocol, round_index=0, inputs=_inputs(), identities=IDS, transcript=None,
              tap=record)

    def replay(stage, data):
        msg = decode(data)
        return recorded["old"] if isinstance(msg, ForwardShares) and msg.receiver == "h4" \
            else data

    with pytest.raises(ProtocolAbort, match="unexpected message"):
        run_round(protocol, round_index=1, inputs=_inputs(), identities=IDS, transcript=None,
                  tap=replay)


@pytest.mark.parametrize("which", ["c_pks", "s_pks"])
def test_a_low_order_key_relayed_in_an_unbound_round_aborts_it(which) -> None:
    """Without a roster nothing authenticates relayed keys; a low-order point (all-zero
    shared secret) must end the round as an abort, not crash a client."""

    def zero_key(msg):
        i = msg.routed.index("h1")
        keys = bytearray(getattr(msg, which))
        keys[32 * i : 32 * (i + 1)] = bytes(32)
        msg = dataclasses.replace(msg, **{which: bytes(keys)})
        # Unbound, the aggregator can hash its own list: the root proves nothing here.
        return dataclasses.replace(msg, root=merkle.key_list_root(
            tuple(msg.ids), msg.c_pks, msg.s_pks, msg.e_pks))

    with pytest.raises(ProtocolAbort, match="key routed for h1 is not a usable X25519 key"):
        _tamper(RouteKeys, zero_key, bound=False, who="", receiver="h2")
