"""The client's steps, as pure functions of (context, state, inbound).

A client refuses (raises `ProtocolAbort`) whenever what the aggregator relays
breaks a rule it can check itself: keys altered, not signed by the roster, not
under the routed root by their inclusion proofs, or not exactly its graph
neighbours' (the graph comes from the root), shares that do not open, a
survivor list L it did not sign, signed (with the key-list commitment it was
routed) by too few clients for one list to be unique, or whose graph is disconnected, and (Bonawitz
et al.'s check that U3 is within U2, per neighbourhood) a neighbour on L whose
shares it never received and whose pairwise mask it did not apply. The list is
the only input of the reveal: it reveals the self-mask share of every owner it
holds that is on L and the key share of every held owner that is not, never
both for one owner, and it answers one unmasking request per round index
(`AnswerLog`, durable where the caller makes it so). A client the aggregator
stopped talking to sends an empty message of the stage's type (the driver
needs one) and nothing derived from its input.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from protocols.errors import ProtocolAbort, ProtocolInputError
from protocols.hazmat.aead import AeadError
from protocols.hazmat.kex import AgreementKey
from protocols.hazmat.prg import reduce_ring
from protocols.hazmat.quantize import QuantizationError, decode, encode, encode_weight, quantize
from protocols.hazmat.shamir import ShamirError, encode_share, split
from protocols.hazmat.signing import SigningKey
from protocols.messages import Message
from protocols.roster import Identities, Roster
from protocols.secagg import crypto, merkle
from protocols.secagg.answers import AnswerLog
from protocols.secagg.context import RoundContext
from protocols.secagg.graph import graph_seed, harary_graph, is_connected, shareholder_x
from protocols.secagg.messages import (
    KEY_BYTES,
    SIG_BYTES,
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
from protocols.secagg.params import signer_quorum
from protocols.secagg.unmask import from_wire, to_wire, wire_matches
from protocols.stages import Aggregate, ClientInput


@dataclass(frozen=True)
class ClientData:
    """A client's round state; its secrets stay out of `repr` (and so out of logs)."""

    ctx: RoundContext
    me: str
    encoded: np.ndarray = field(repr=False)  # [omega * q, omega, clipped], unmasked
    seed: bytes = field(repr=False)  # the round seed: every key, share and nonce comes from it
    c_key: AgreementKey = field(repr=False)
    s_key: AgreementKey = field(repr=False)
    s_raw: bytes = field(repr=False)
    b_seed: bytes = field(repr=False)
    e_key: SigningKey = field(repr=False)
    contacted: bool = True
    ids: tuple[str, ...] = ()
    commitment: bytes = b""  # merkle.list_commitment of the routed key list
    roster: Roster | None = None  # bound round: attestations and consistency are roster-signed
    signer: SigningKey | None = field(default=None, repr=False)
    keys: Mapping[str, tuple[bytes, bytes, bytes]] = field(default_factory=dict)  # routed only
    graph: Mapping[str, frozenset[str]] = field(default_factory=dict)
    xs: Mapping[str, int] = field(default_factory=dict)
    held: Mapping[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    # The keys that open each neighbour's share box, derived with the sealing keys.
    open_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    masked_with: tuple[str, ...] = ()
    signed_list: tuple[str, ...] = ()
    included: tuple[str, ...] = ()
    reveal_b: tuple[str, ...] = ()
    reveal_sk: tuple[str, ...] = ()
    answered: bool = False
    aggregate_digest: str | None = None


def start(
    ctx: RoundContext, *, me: str, client_input: ClientInput, seed: bytes
) -> ClientData:
    """Quantize and encode the input, and draw this round's keys from `seed`."""
    omega = encode_weight(client_input.weight, fixed=ctx.fixed)
    q, clipped = quantize(
        client_input.vector, fixed=ctx.fixed, random_bytes=crypto.stream(seed, "rounding")
    )
    s_raw = crypto.derive(seed, "s-key")
    return ClientData(
        ctx=ctx,
        me=me,
        encoded=encode(q, omega=omega, clipped=clipped, ring=ctx.ring),
        seed=seed,
        c_key=crypto.agreement_key(crypto.derive(seed, "c-key")),
        s_key=crypto.agreement_key(s_raw),
        s_raw=s_raw,
        b_seed=crypto.derive(seed, "self-mask-seed"),
        e_key=crypto.ephemeral_signer(crypto.derive(seed, "e-key")),
    )


def _refuse(st: ClientData, why: str) -> ProtocolAbort:
    return ProtocolAbort(f"{st.me} refuses in round {st.ctx.round_index}: {why}")


def _replace(st: ClientData, **changes) -> ClientData:
    return dataclasses.replace(st, **changes)


def _agree(st: ClientData, peer: str, derive, *args, **kwargs) -> bytes:
    """A key agreement with a routed key; a low-order or malformed key (which an
    unbound round cannot rule out) aborts the round instead of crashing the client."""
    try:
        return derive(*args, **kwargs)
    except ProtocolInputError:
        raise _refuse(st, f"the key routed for {peer} is not a usable X25519 key") from None


def _sorted_unique(ids: Sequence[str]) -> bool:
    """Strictly increasing: one C-level pass (a set and a sort cost O(n log n) per list)."""
    ids = tuple(ids)
    return all(map(operator.lt, ids, ids[1:]))


def _one(st: ClientData, messages: Sequence[Message], kind: type[Message]) -> Message | None:
    if not messages:
        return None
    if not isinstance(messages[0], kind):
        raise _refuse(st, f"expected {kind.TYPE_NAME}, got {messages[0].TYPE_NAME}")
    return messages[0]


# -- AdvertiseKeys / RouteKeys ---------------------------------------------------------
def advertise(st: ClientData, identities: Identities | None, aggregator: str) -> AdvertiseKeys:
    """The round's public keys, signed with the roster identity key when there is one."""
    c_pk, s_pk, e_pk = st.c_key.public_key, st.s_key.public_key, st.e_key.public_key
    sig = b""
    if identities is not None:
        statement = crypto.advertise_statement(
            round_index=st.ctx.round_index, client_id=st.me, c_pk=c_pk, s_pk=s_pk, e_pk=e_pk,
            params=st.ctx.params_digest)
        sig = identities.signing_key(st.me).sign(statement)
    return AdvertiseKeys(round_index=st.ctx.round_index, sender=st.me, receiver=aggregator,
                         c_pk=c_pk, s_pk=s_pk, e_pk=e_pk, id_sig=sig)


def receive_route(
    st: ClientData,
    messages: Sequence[Message],
    *,
    identities: Identities | None,
    participants: Sequence[str],
) -> ClientData:
    """Check the routed key list and derive the graph from its root. The keys come
    for `routed` only: in a bound round me and my graph neighbours, each with an
    inclusion proof against the root and its roster signature; in an unbound round
    everyone, and I recompute the root. The graph is derived from the commitment to
    (round, id list, root), which I sign with the survivor list later: an aggregator
    that routes different lists or roots to different clients gets signatures that
    never count together, and it cannot pick neighbours after seeing the keys."""
    msg = _one(st, messages, RouteKeys)
    if msg is None:
        return _replace(st, contacted=False)
    ctx, n = st.ctx, len(msg.ids)
    shape = (msg.degree, msg.threshold, msg.length, msg.dtype)
    if shape != (ctx.plan.degree, ctx.plan.threshold, ctx.vector_length, ctx.dtype):
        raise _refuse(st, f"the round's public parameters were altered: {shape}")
    if not _sorted_unique(msg.ids) or not set(msg.ids) <= set(participants) or st.me not in msg.ids:
        raise _refuse(st, "the routed key list is not a sorted list of participants with me in it")
    if n < ctx.threshold:
        raise _refuse(st, f"only {n} clients advertised keys, below the threshold {ctx.threshold}")
    ids, routed, m = tuple(msg.ids), tuple(msg.routed), len(msg.routed)
    if not _sorted_unique(routed) or not set(routed) <= set(ids) or st.me not in routed:
        raise _refuse(st, "the routed keys are not a sorted sublist of the key list with me in it")
    sig_len = SIG_BYTES * m if identities is not None else 0
    if (len(msg.root), len(msg.c_pks), len(msg.s_pks), len(msg.e_pks), len(msg.id_sigs)) != (
        merkle.HASH_BYTES, KEY_BYTES * m, KEY_BYTES * m, KEY_BYTES * m, sig_len
    ):
        raise _refuse(st, "routed keys have the wrong sizes")
    at = slice(KEY_BYTES * routed.index(st.me), KEY_BYTES * (routed.index(st.me) + 1))
    mine = (st.c_key.public_key, st.s_key.public_key, st.e_key.public_key)
    if (msg.c_pks[at], msg.s_pks[at], msg.e_pks[at]) != mine:
        raise _refuse(st, "the aggregator relayed my keys altered")
    # The parsing and checking below are pure functions of the routed bytes, memoized
    # (crypto.routed_keys, crypto.advert_signed, merkle.key_list_root).
    keys = crypto.routed_keys(routed, msg.c_pks, msg.s_pks, msg.e_pks)
    if keys is None:
        raise _refuse(st, "two advertised keys are equal")
    if identities is not None:
        unsigned = crypto.first_unsigned_advert(identities.roster(), ctx.round_index, routed,
                                                msg.c_pks, msg.s_pks, msg.e_pks, msg.id_sigs,
                                                ctx.params_digest)
        if unsigned is not None:
            raise _refuse(st, f"the keys relayed for {unsigned} are not signed by its roster key")
    commitment = merkle.list_commitment(ctx.round_index, ids, msg.root)
    seed = graph_seed(round_index=ctx.round_index, degree=ctx.plan.degree, commitment=commitment)
    graph = harary_graph(ids, degree=ctx.plan.degree, seed=seed)
    if routed == ids:
        if msg.proofs:
            raise _refuse(st, "routed keys have the wrong sizes")
        if merkle.key_list_root(ids, msg.c_pks, msg.s_pks, msg.e_pks) != msg.root:
            raise _refuse(st, "the routed keys do not hash to the key list's root")
    elif identities is None:
        raise _refuse(st, "an unbound round must route every client's keys")
    elif routed != tuple(sorted(graph[st.me] | {st.me})):
        raise _refuse(st, "the routed keys are not those of my neighbours in the graph of "
                          "the key list")
    else:
        _check_proofs(st, msg, ids, routed, keys)
    return _replace(
        st,
        ids=ids,
        commitment=commitment,
        roster=identities.roster() if identities is not None else None,
        signer=identities.signing_key(st.me) if identities is not None else st.e_key,
        keys=keys,
        graph=graph,
        xs=shareholder_x(ids),
    )


def _check_proofs(st: ClientData, msg: RouteKeys, ids: tuple[str, ...],
                  routed: tuple[str, ...], keys: Mapping[str, tuple[bytes, bytes, bytes]]) -> None:
    """Each routed client's (index, id, keys) is a leaf of the root, by its proof."""
    n, index = len(ids), {c: i for i, c in enumerate(ids)}
    lengths = [merkle.proof_length(index[c], n) for c in routed]
    if len(msg.proofs) != merkle.HASH_BYTES * sum(lengths):
        raise _refuse(st, "the inclusion proofs have the wrong sizes")
    hashes = crypto.chunks(msg.proofs, merkle.HASH_BYTES)
    at = 0
    for cid, size in zip(routed, lengths, strict=True):
        leaf = merkle.leaf_hash(index[cid], cid, *keys[cid])
        if not merkle.verify_inclusion(leaf, index[cid], n, hashes[at:at + size], msg.root):
            raise _refuse(st, f"the keys routed for {cid} are not in the key list under its "
                              "root (invalid inclusion proof)")
        at += size


def _round_pk(st: ClientData, cid: str) -> bytes:
    """The key `cid` signs attestations and consistency with: roster key when bound."""
    return st.roster.public_key(cid) if st.roster is not None else st.keys[cid][2]


# -- ShareKeys / ForwardShares -------------------------------------------------------------
def share_keys(st: ClientData, aggregator: str) -> tuple[ClientData, ShareKeys]:
    r = st.ctx.round_index
    if not st.contacted:
        return st, ShareKeys(round_index=r, sender=st.me, receiver=aggregator, receivers=(),
                             sealed=b"")
    holders = sorted(st.graph[st.me])
    points = [st.xs[v] for v in holders] + [st.xs[st.me]]
    b_row, sk_row = split(
        [st.b_seed, st.s_raw],
        threshold=st.ctx.threshold,
        xs=points,
        random_bytes=crypto.stream(st.seed, "shamir"),
    )
    nonces = crypto.stream(st.seed, "share-nonces")
    sealed, open_keys = [], {}
    for i, v in enumerate(holders):
        key, open_keys[v] = _agree(st, v, crypto.share_keys_with, st.c_key, st.keys[v][0],
                                   round_index=r, me=st.me, other=v)
        ad = crypto.share_ad(round_index=r, sender=st.me, receiver=v)
        sealed.append(crypto.seal_shares(key, b_row[i], sk_row[i], nonce=nonces(12), ad=ad))
    held = {st.me: (b_row[-1], sk_row[-1])}
    msg = ShareKeys(round_index=r, sender=st.me, receiver=aggregator, receivers=tuple(holders),
                    sealed=b"".join(sealed))
    return _replace(st, held=held, open_keys=open_keys), msg


def receive_forward(st: ClientData, messages: Sequence[Message]) -> ClientData:
    msg = _one(st, messages, ForwardShares)
    if msg is None:
        return _replace(st, contacted=False)
    r = st.ctx.round_index
    senders = list(msg.senders)
    if not _sorted_unique(senders) or not set(senders) <= st.graph[st.me]:
        raise _refuse(st, "shares forwarded from clients that are not my neighbours")
    if len(msg.sealed) != crypto.SEALED_BYTES * len(senders):
        raise _refuse(st, "forwarded shares have the wrong size")
    held = dict(st.held)
    for v, sealed in zip(senders, crypto.chunks(msg.sealed, crypto.SEALED_BYTES), strict=True):
        if v not in st.open_keys:  # I shared no keys this round, so I hold no box key
            raise _refuse(st, f"shares forwarded from {v}, with whom I shared no keys")
        try:
            held[v] = crypto.open_shares(st.open_keys[v], sealed, ad=crypto.share_ad(
                round_index=r, sender=v, receiver=st.me))
        except (AeadError, ShamirError):
            raise _refuse(st, f"the shares from {v} do not open (tampered or replayed)") from None
    if len(senders) + 1 < st.ctx.threshold:
        raise _refuse(st, f"only {len(senders)} neighbours shared keys: my secrets could not "
                          f"be rebuilt from {st.ctx.threshold} shares")
    return _replace(st, held=held, masked_with=tuple(senders))


# -- MaskedInput ---------------------------------------------------------------------------
def masked_input(st: ClientData, aggregator: str) -> MaskedInput:
    ctx = st.ctx
    if not st.contacted:
        return MaskedInput(round_index=ctx.round_index, sender=st.me, receiver=aggregator,
                           masked=np.zeros(0, dtype=np.uint8), missing=(), missing_sig=b"")
    acc = st.encoded.copy()
    crypto.add_self_mask(acc, st.b_seed, bits=ctx.ring.bits)
    for v in st.masked_with:
        seed = _agree(st, v, crypto.pairwise_seed, st.s_key, st.keys[v][1],
                      round_index=ctx.round_index, a=st.me, b=v)
        crypto.add_pair_mask(acc, seed, bits=ctx.ring.bits,
                             subtract=not crypto.pair_sign_adds(st.me, v))
    reduce_ring(acc, bits=ctx.ring.bits)
    missing = tuple(sorted(st.graph[st.me] - set(st.masked_with)))
    sig = st.signer.sign(crypto.missing_statement(round_index=ctx.round_index, client_id=st.me,
                                                 missing=missing))
    return MaskedInput(round_index=ctx.round_index, sender=st.me, receiver=aggregator,
                       masked=to_wire(acc, ring=ctx.ring), missing=missing, missing_sig=sig)


# -- ConsistencyCheck ------------------------------------------------------------------------
def _check_survivor_list(st: ClientData, listed: tuple[str, ...]) -> None:
    """What a client checks of a survivor list L before it signs or unmasks for it."""
    ctx = st.ctx
    if not _sorted_unique(listed) or not set(listed) <= set(st.ids) or st.me not in listed:
        raise _refuse(st, "the survivor list is malformed or leaves me out")
    if len(listed) < ctx.threshold:
        raise _refuse(st, f"{len(listed)} survivors is below the threshold {ctx.threshold}")
    if len(listed) < ctx.min_contributors:
        raise _refuse(st, f"{len(listed)} survivors is below the noise floor of "
                          f"{ctx.min_contributors} contributors")
    # Bonawitz et al.'s U3 within U2, per neighbourhood: every neighbour on L must
    # be one whose pairwise mask I applied, or my masked input would be missing the
    # masks that hide it inside the sum (an aggregator that forwarded me only some
    # neighbours' shares, then listed the others, could strip mine one by one).
    unmasked = sorted((st.graph[st.me] & set(listed)) - set(st.masked_with))
    if unmasked:
        raise _refuse(st, f"{unmasked[0]} is on the survivor list but I did not mask with it")
    if not is_connected(listed, st.graph):
        raise _refuse(st, "the survivors' graph is disconnected: unmasking would reveal the "
                          "sums of its parts")


def receive_consistency(st: ClientData, messages: Sequence[Message]) -> ClientData:
    msg = _one(st, messages, ConsistencyRequest)
    if msg is None:
        return _replace(st, contacted=False)
    listed = tuple(msg.masked_senders)
    _check_survivor_list(st, listed)
    return _replace(st, signed_list=listed)


def consistency_sign(st: ClientData, aggregator: str) -> ConsistencySign:
    sig = b""
    if st.contacted:
        sig = st.signer.sign(crypto.consistency_statement(
            round_index=st.ctx.round_index, masked_senders=st.signed_list,
            commitment=st.commitment))
    return ConsistencySign(round_index=st.ctx.round_index, sender=st.me, receiver=aggregator,
                           signature=sig)


# -- Unmask -----------------------------------------------------------------------------------
def receive_unmask_request(
    st: ClientData, messages: Sequence[Message], *, consistency: bool,
    answers: AnswerLog | None = None,
) -> ClientData:
    msg = _one(st, messages, UnmaskRequest)
    if msg is None:
        return _replace(st, contacted=False)
    if st.answered:
        raise _refuse(st, "asked to unmask a second time")
    listed, dropped = tuple(msg.included), tuple(msg.dropped)
    if not (_sorted_unique(listed) and _sorted_unique(dropped)):
        raise _refuse(st, "survivor lists are not sorted lists of distinct ids")
    both = set(listed) & set(dropped)
    if both:
        raise _refuse(st, f"{sorted(both)[0]} is listed both as included and as dropped")
    if not set(dropped) <= set(st.ids):
        raise _refuse(st, "the dropped list names unknown clients")
    if consistency:
        _check_signatures(st, msg)
    elif msg.signed_list or msg.signers or msg.signatures:
        raise _refuse(st, "consistency signatures in a round without the consistency check")
    _check_survivor_list(st, listed)
    _check_attestations(st, msg, listed)
    holdings = set(st.held)
    # The list alone decides what is revealed; the request's dropped list must only
    # agree with it, so the transcript names every owner whose key share left.
    reveal_b = tuple(sorted(holdings & set(listed)))
    reveal_sk = tuple(sorted(holdings - set(listed)))
    unnamed = sorted(set(reveal_sk) - set(dropped))
    if unnamed:
        raise _refuse(st, f"{unnamed[0]} is off the survivor list but not named dropped")
    if answers is not None:
        answers.claim(st.me, st.ctx.round_index)  # durable before anything is revealed
    return _replace(st, included=listed, reveal_b=reveal_b, reveal_sk=reveal_sk)


def _check_attestations(st: ClientData, msg: UnmaskRequest, listed: tuple[str, ...]) -> None:
    """Every member of L signed, with its masked input, that it masked with each of its
    neighbours on L. My own check covers only my side of my edges: a neighbour that
    the aggregator kept from my shares (and then stopped talking to) would leave an
    edge masked at one end only, and the sum of the clients beyond it computable
    without it. With every member's word, every edge inside L is masked at both ends."""
    if len(msg.missing) != len(listed) or len(msg.missing_sigs) != SIG_BYTES * len(listed):
        raise _refuse(st, "one mask-partner attestation per member of the survivor list is "
                          "required")
    gaps = tuple(crypto.split_ids(m) for m in msg.missing)
    bad = crypto.first_bad_attestation(
        st.ctx.round_index, listed, tuple(_round_pk(st, c) for c in listed), gaps,
        tuple(crypto.chunks(msg.missing_sigs, SIG_BYTES)))
    if bad is not None:
        raise _refuse(st, f"{bad}'s mask-partner attestation is invalid")
    on_list = set(listed)
    for cid, missing in zip(listed, gaps, strict=True):
        if not missing or on_list.isdisjoint(missing):  # the common case, in C
            continue
        unmasked = sorted(set(missing) & on_list)
        if unmasked:
            raise _refuse(st, f"{cid} did not mask with {unmasked[0]}, which is on the "
                              "survivor list")


def _check_signatures(st: ClientData, msg: UnmaskRequest) -> None:
    listed = tuple(msg.included)
    if tuple(msg.signed_list) != st.signed_list or listed != st.signed_list:
        raise _refuse(st, "the survivor list differs from the one I signed")
    signers = tuple(msg.signers)
    if not _sorted_unique(signers) or not set(signers) <= set(listed):
        raise _refuse(st, "the signers are not a sorted list of clients on the survivor list")
    if len(msg.signatures) != SIG_BYTES * len(signers):
        raise _refuse(st, "one consistency signature per signer is required")
    need = signer_quorum(len(st.ids), st.ctx.colluders)
    if len(signers) < need:
        raise _refuse(st, f"{len(signers)} signers of {len(st.ids)} is below the quorum of "
                          f"{need}: two different survivor lists could both be signed")
    bad = crypto.first_bad_consistency_sig(
        st.ctx.round_index, st.signed_list, st.commitment, signers,
        tuple(_round_pk(st, cid) for cid in signers),
        tuple(crypto.chunks(msg.signatures, SIG_BYTES)))
    if bad is not None:
        raise _refuse(st, f"{bad}'s consistency signature is invalid")


def unmask(st: ClientData, aggregator: str) -> tuple[ClientData, Unmask]:
    r = st.ctx.round_index
    if not st.contacted:
        return st, Unmask(round_index=r, sender=st.me, receiver=aggregator, b_owners=(),
                          b_shares=b"", sk_owners=(), sk_shares=b"")
    if set(st.reveal_b) & set(st.reveal_sk):  # guarded above; the rule is absolute
        raise _refuse(st, "would reveal both shares of one client")
    msg = Unmask(
        round_index=r,
        sender=st.me,
        receiver=aggregator,
        b_owners=st.reveal_b,
        b_shares=b"".join(encode_share(st.held[o][0]) for o in st.reveal_b),
        sk_owners=st.reveal_sk,
        sk_shares=b"".join(encode_share(st.held[o][1]) for o in st.reveal_sk),
    )
    return _replace(st, answered=True), msg


# -- Release ------------------------------------------------------------------------------------
def receive_release(st: ClientData, messages: Sequence[Message]) -> ClientData:
    msg = _one(st, messages, Release)
    if msg is None:
        return st
    ctx = st.ctx
    if tuple(msg.included) != st.included:
        raise _refuse(st, "the released aggregate names other included clients")
    if not wire_matches(msg.total, ring=ctx.ring, length=ctx.length):
        raise _refuse(st, "the released aggregate has the wrong shape")
    try:
        decoded = decode(from_wire(msg.total, ring=ctx.ring), fixed=ctx.fixed, ring=ctx.ring,
                         integer=ctx.integer, n=len(st.included))
    except QuantizationError as exc:
        raise _refuse(st, str(exc)) from None
    digest = Aggregate(weighted_sum=decoded.weighted_sum,
                       total_weight=decoded.total_weight).digest()
    return _replace(st, aggregate_digest=digest)
