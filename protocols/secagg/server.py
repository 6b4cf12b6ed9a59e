"""The aggregator's steps, as pure functions over its round data.

Sets of the round (Bonawitz et al.): U1 advertised keys, U2 shared keys, U3
sent a masked input, S (included) signed the consistency list (U3 without the
consistency round) and was still reachable; D = U2 - S are the dropped
clients whose pairwise masks must be removed. After every step the aggregator
checks that each client of U2 can still get t shares back from reachable
shareholders and aborts as soon as one cannot (no partial aggregate is ever
computed); it also refuses a disconnected survivor graph, as clients do.
Each receive returns the new data and the senders to drop with the reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from protocols.hazmat.quantize import Decoded, QuantizationError, decode
from protocols.hazmat.shamir import SHARE_BYTES, ShamirError, decode_share, reconstruct_many
from protocols.hazmat.signing import verify_signature
from protocols.messages import Message
from protocols.roster import Roster
from protocols.secagg import crypto, merkle
from protocols.secagg.context import RoundContext
from protocols.secagg.graph import graph_seed, harary_graph, is_connected, shareholder_x
from protocols.secagg.messages import (
    KEY_BYTES,
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
from protocols.secagg.unmask import to_wire, unmask_total, wire_matches

Drops = dict[str, str]


@dataclass(frozen=True)
class ServerData:
    ctx: RoundContext
    roster: Roster | None = None
    keys: Mapping[str, tuple[bytes, bytes, bytes]] = field(default_factory=dict)
    id_sigs: Mapping[str, bytes] = field(default_factory=dict)
    ids: tuple[str, ...] = ()
    commitment: bytes = b""  # merkle.list_commitment of the routed key list
    graph: Mapping[str, frozenset[str]] = field(default_factory=dict)
    xs: Mapping[str, int] = field(default_factory=dict)
    sealed: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)
    u2: tuple[str, ...] = ()
    masked: Mapping[str, np.ndarray] = field(default_factory=dict)
    missing: Mapping[str, tuple[tuple[str, ...], bytes]] = field(default_factory=dict)
    u3: tuple[str, ...] = ()
    signatures: Mapping[str, bytes] = field(default_factory=dict)
    included: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    total: np.ndarray | None = None
    decoded: Decoded | None = None


def round_public_key(data: ServerData, cid: str) -> bytes:
    """The key `cid` signs its attestation and consistency signature with: its roster
    key in a bound round, its routed round key e otherwise."""
    return data.roster.public_key(cid) if data.roster is not None else data.keys[cid][2]


def _msg(ctx: RoundContext, cls, aggregator: str, receiver: str, **fields) -> Message:
    return cls(round_index=ctx.round_index, sender=aggregator, receiver=receiver, **fields)


def holdings(data: ServerData, cid: str) -> set[str]:
    """Whose shares `cid` holds: its U2 neighbours (forwarded to it) and itself."""
    return (set(data.graph[cid]) & set(data.u2)) | {cid}


def recovery_gap(data: ServerData, owners: Collection[str], alive: Collection[str]) -> str | None:
    """Why some owner can no longer get t shares back from `alive` shareholders, if so."""
    t, pool = data.ctx.threshold, set(owners)
    alive = set(alive)
    for v in sorted(pool):
        holders = ((set(data.graph[v]) & pool) | {v}) & alive
        if len(holders) < t:
            return (f"round {data.ctx.round_index}: {v} keeps {len(holders)} reachable "
                    f"shareholders, below the threshold {t}: its masks cannot be removed")
    return None


# -- AdvertiseKeys / RouteKeys ---------------------------------------------------------------
def receive_keys(
    data: ServerData, messages: Sequence[Message], roster: Roster | None
) -> tuple[ServerData, Drops]:
    bad: Drops = {}
    keys, sigs = {}, {}
    for msg in messages:
        if not isinstance(msg, AdvertiseKeys) or not all(
            len(k) == KEY_BYTES for k in (msg.c_pk, msg.s_pk, msg.e_pk)
        ):
            bad[msg.sender] = "malformed keys"
            continue
        if roster is None:
            ok = msg.id_sig == b""
        else:
            statement = crypto.advertise_statement(
                round_index=data.ctx.round_index, client_id=msg.sender, c_pk=msg.c_pk,
                s_pk=msg.s_pk, e_pk=msg.e_pk, params=data.ctx.params_digest)
            ok = verify_signature(public_key=roster.public_key(msg.sender), message=statement,
                                  signature=msg.id_sig)
        if not ok:
            bad[msg.sender] = "keys not signed by the sender's roster key"
            continue
        keys[msg.sender] = (msg.c_pk, msg.s_pk, msg.e_pk)
        sigs[msg.sender] = msg.id_sig
    return dataclasses.replace(data, roster=roster, keys=keys, id_sigs=sigs), bad


def route_keys(
    data: ServerData, active: Sequence[str], aggregator: str
) -> tuple[ServerData, tuple[Message, ...]]:
    """The id list, the Merkle root of its keys, and to each client the keys of its
    graph neighbours (and its own) with inclusion proofs; everyone's keys, without
    proofs, in an unbound round (nothing there authenticates a client's consistency
    signature but the routed key e, so each client needs all of them)."""
    ctx = data.ctx
    ids = tuple(sorted(c for c in active if c in data.keys))
    cols = tuple(b"".join(data.keys[c][j] for c in ids) for j in range(3))
    leaves = merkle.key_list_leaves(ids, *cols)
    root = merkle.tree_root(leaves)
    commitment = merkle.list_commitment(ctx.round_index, ids, root)
    seed = graph_seed(round_index=ctx.round_index, degree=ctx.plan.degree, commitment=commitment)
    graph = harary_graph(ids, degree=ctx.plan.degree, seed=seed)
    data = dataclasses.replace(data, ids=ids, graph=graph, xs=shareholder_x(ids),
                               commitment=commitment)
    shape = dict(degree=ctx.plan.degree, threshold=ctx.plan.threshold,
                 length=ctx.vector_length, dtype=ctx.dtype, ids=ids, root=root)
    everyone = dict(shape, routed=ids, c_pks=cols[0], s_pks=cols[1], e_pks=cols[2],
                    id_sigs=b"".join(data.id_sigs[c] for c in ids), proofs=b"")
    if data.roster is None:
        return data, tuple(_msg(ctx, RouteKeys, aggregator, c, **everyone) for c in ids)
    index = {c: i for i, c in enumerate(ids)}
    proofs = merkle.inclusion_proofs(leaves, range(len(ids)))
    out = []
    for c in ids:
        routed = tuple(sorted(graph[c] | {c}))
        if len(routed) == len(ids):
            out.append(_msg(ctx, RouteKeys, aggregator, c, **everyone))
            continue
        out.append(_msg(
            ctx, RouteKeys, aggregator, c, **shape, routed=routed,
            c_pks=b"".join(data.keys[v][0] for v in routed),
            s_pks=b"".join(data.keys[v][1] for v in routed),
            e_pks=b"".join(data.keys[v][2] for v in routed),
            id_sigs=b"".join(data.id_sigs[v] for v in routed),
            proofs=b"".join(p for v in routed for p in proofs[index[v]])))
    return data, tuple(out)


# -- ShareKeys / ForwardShares ------------------------------------------------------------------
def receive_shares(data: ServerData, messages: Sequence[Message]) -> tuple[ServerData, Drops]:
    bad: Drops = {}
    sealed: dict[str, dict[str, bytes]] = {}
    for msg in messages:
        expected = tuple(sorted(data.graph.get(msg.sender, ())))
        if (
            not isinstance(msg, ShareKeys)
            or msg.sender not in data.graph
            or tuple(msg.receivers) != expected
            or len(msg.sealed) != crypto.SEALED_BYTES * len(expected)
        ):
            bad[msg.sender] = "shares not addressed to exactly its neighbours"
            continue
        parts = crypto.chunks(msg.sealed, crypto.SEALED_BYTES)
        sealed[msg.sender] = dict(zip(expected, parts, strict=True))
    return dataclasses.replace(data, sealed=sealed), bad


def forward_shares(
    data: ServerData, active: Sequence[str], aggregator: str
) -> tuple[ServerData, tuple[Message, ...], str | None]:
    u2 = tuple(sorted(c for c in active if c in data.sealed))
    data = dataclasses.replace(data, u2=u2)
    gap = recovery_gap(data, u2, u2)
    if gap is not None:
        return data, (), gap
    out = []
    in_u2 = set(u2)  # a set: n clients times k neighbours would scan the tuple n k times
    for w in u2:
        senders = tuple(sorted(v for v in data.graph[w] if v in data.sealed and v in in_u2))
        out.append(_msg(data.ctx, ForwardShares, aggregator, w, senders=senders,
                        sealed=b"".join(data.sealed[v][w] for v in senders)))
    return dataclasses.replace(data, sealed={}), tuple(out), None


# -- MaskedInput / ConsistencyCheck ----------------------------------------------------------------
def receive_masked(data: ServerData, messages: Sequence[Message]) -> tuple[ServerData, Drops]:
    ctx = data.ctx
    bad: Drops = {}
    masked, attested = {}, {}
    in_u2 = set(data.u2)
    for msg in messages:
        if (
            not isinstance(msg, MaskedInput)
            or msg.sender not in in_u2
            or not wire_matches(msg.masked, ring=ctx.ring, length=ctx.length)
        ):
            bad[msg.sender] = f"masked input is not {ctx.length} elements of Z_2^{ctx.ring.bits}"
            continue
        statement = crypto.missing_statement(round_index=ctx.round_index, client_id=msg.sender,
                                             missing=msg.missing)
        if not verify_signature(public_key=round_public_key(data, msg.sender),
                                message=statement, signature=msg.missing_sig):
            bad[msg.sender] = "mask-partner attestation not signed by its round signing key"
            continue
        masked[msg.sender] = msg.masked
        attested[msg.sender] = (tuple(msg.missing), msg.missing_sig)
    return dataclasses.replace(data, masked=masked, missing=attested), bad


def _list_gap(data: ServerData, listed: Sequence[str], alive: Sequence[str]) -> str | None:
    """Why the survivor list L cannot be unmasked with the `alive` shareholders, if so:
    the checks every honest client applies to L, plus share recovery."""
    ctx = data.ctx
    r = ctx.round_index
    if len(listed) < ctx.threshold:
        return f"round {r}: {len(listed)} survivors is below the threshold {ctx.threshold}"
    if len(listed) < ctx.min_contributors:
        return (f"round {r}: {len(listed)} contributors is below the noise floor of "
                f"{ctx.min_contributors}; the sum would carry less DP noise than planned")
    if not is_connected(listed, data.graph):
        return f"round {r}: the survivors' graph is disconnected; unmasking would reveal partial sums"
    on_list = set(listed)
    for cid in listed:
        if on_list & set(data.missing[cid][0]):
            return f"round {r}: {cid} did not mask with every neighbour on the survivor list"
    return recovery_gap(data, data.u2, alive)


def consistency_request(
    data: ServerData, active: Sequence[str], aggregator: str
) -> tuple[ServerData, tuple[Message, ...], str | None]:
    # L = U3: everyone whose masked input arrived, also those unreachable since.
    u3 = tuple(sorted(data.masked))
    reachable = tuple(c for c in u3 if c in active)
    data = dataclasses.replace(data, u3=u3)
    out = tuple(
        _msg(data.ctx, ConsistencyRequest, aggregator, c, masked_senders=u3) for c in reachable
    )
    return data, out, _list_gap(data, u3, reachable)


def receive_signatures(data: ServerData, messages: Sequence[Message]) -> tuple[ServerData, Drops]:
    statement = crypto.consistency_statement(round_index=data.ctx.round_index,
                                             masked_senders=data.u3,
                                             commitment=data.commitment)
    bad: Drops = {}
    sigs = {}
    for msg in messages:
        if (
            not isinstance(msg, ConsistencySign)
            or msg.sender not in data.u3
            or not verify_signature(public_key=round_public_key(data, msg.sender),
                                    message=statement, signature=msg.signature)
        ):
            bad[msg.sender] = "invalid consistency signature"
            continue
        sigs[msg.sender] = msg.signature
    return dataclasses.replace(data, signatures=sigs), bad


# -- Unmask ------------------------------------------------------------------------------------------
def unmask_request(
    data: ServerData, active: Sequence[str], aggregator: str, *, consistency: bool
) -> tuple[ServerData, tuple[Message, ...], str | None]:
    """Ask the reachable clients of L to unmask. L is every client whose masked input
    the aggregator holds (the signed list with the consistency round): a client on L
    that drops afterwards stays in the sum, its self-mask rebuilt from shares."""
    ctx = data.ctx
    listed = data.u3 if consistency else tuple(sorted(data.masked))
    signers = tuple(sorted(data.signatures)) if consistency else ()
    dropped = tuple(sorted(set(data.u2) - set(listed)))
    on_list = set(listed)
    askable = tuple(sorted(c for c in active if c in on_list))
    data = dataclasses.replace(data, included=listed, dropped=dropped)
    why = _list_gap(data, listed, askable)
    need = signer_quorum(len(data.ids), ctx.colluders)
    if consistency and len(signers) < need:
        why = why or (f"round {ctx.round_index}: {len(signers)} of {len(data.ids)} clients "
                      f"signed the survivor list, below the quorum of {need}")
    if why is not None:
        return data, (), why
    fields = dict(
        included=listed,
        dropped=dropped,
        signed_list=listed if consistency else (),
        signers=signers,
        signatures=b"".join(data.signatures[c] for c in signers),
        missing=tuple(crypto.join_ids(data.missing[c][0]) for c in listed),
        missing_sigs=b"".join(data.missing[c][1] for c in listed),
    )
    return data, tuple(_msg(ctx, UnmaskRequest, aggregator, c, **fields) for c in askable), None


def expected_reveals(data: ServerData, cid: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    held = holdings(data, cid)
    return (tuple(sorted(held & set(data.included))), tuple(sorted(held & set(data.dropped))))


def _shares(owners: Sequence[str], blob: bytes) -> list[tuple[str, int]] | None:
    if len(blob) != SHARE_BYTES * len(owners):
        return None
    try:
        return [(o, decode_share(b)) for o, b in zip(owners, crypto.chunks(blob, SHARE_BYTES),
                                                      strict=True)]
    except ShamirError:
        return None


def receive_unmask(
    data: ServerData, messages: Sequence[Message]
) -> tuple[ServerData, Drops, str | None]:
    """Collect the revealed shares, rebuild the secrets and remove the masks."""
    ctx = data.ctx
    bad: Drops = {}
    b_sets: dict[str, list[tuple[int, int]]] = {c: [] for c in data.included}
    sk_sets: dict[str, list[tuple[int, int]]] = {c: [] for c in data.dropped}
    for msg in messages:
        want_b, want_sk = expected_reveals(data, msg.sender)
        if not isinstance(msg, Unmask) or (tuple(msg.b_owners), tuple(msg.sk_owners)) != (
            want_b, want_sk
        ):
            bad[msg.sender] = "revealed shares other than those requested"
            continue
        b, sk = _shares(want_b, msg.b_shares), _shares(want_sk, msg.sk_shares)
        if b is None or sk is None:
            bad[msg.sender] = "malformed shares"
            continue
        x = data.xs[msg.sender]
        for owner, y in b:
            b_sets[owner].append((x, y))
        for owner, y in sk:
            sk_sets[owner].append((x, y))
    t = ctx.threshold
    for kind, sets in (("self-mask seed", b_sets), ("mask key", sk_sets)):
        for owner, shares in sorted(sets.items()):
            if len(shares) < t:
                return data, bad, (f"round {ctx.round_index}: {len(shares)} shares of {owner}'s "
                                   f"{kind} arrived, {t} needed")
    try:
        b_seeds = reconstruct_many(b_sets, threshold=t)
        sk_raw = reconstruct_many(sk_sets, threshold=t)
        total = unmask_total(
            round_index=ctx.round_index, ring=ctx.ring, length=ctx.length,
            masked={c: data.masked[c] for c in data.included}, b_seeds=b_seeds,
            dropped_keys=sk_raw, s_pks={c: k[1] for c, k in data.keys.items()},
            graph=data.graph)
        decoded = decode(total, fixed=ctx.fixed, ring=ctx.ring, integer=ctx.integer,
                         n=len(data.included))
    except (ShamirError, QuantizationError, ValueError) as exc:
        return data, bad, f"round {ctx.round_index}: unmasking failed: {exc}"
    return dataclasses.replace(data, total=total, decoded=decoded, masked={}), bad, None


def release(
    data: ServerData, active: Sequence[str], aggregator: str
) -> tuple[ServerData, tuple[Message, ...]]:
    wire = to_wire(data.total, ring=data.ctx.ring)
    return data, tuple(
        _msg(data.ctx, Release, aggregator, c, included=data.included, total=wire) for c in active
    )
