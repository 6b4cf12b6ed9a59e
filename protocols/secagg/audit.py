"""What a reviewer checks in a secagg round from its transcript alone.

Each message record carries a small signed `meta` (who a list names, which
shares a client revealed), so these rules need no payloads:

- the aggregator routed one key list and one graph (degree, threshold as the
  analysis fixes them for n) to every client; shares went only to neighbours;
- every client was sent the same survivor lists (an aggregator listing a client
  as included to some and dropped to others is caught here); with the
  consistency round, the unmasking request names the list that was signed, and
  a quorum of signers (`signer_quorum`);
- Bonawitz et al.'s check per neighbourhood, for every member of the list: its
  masked input attests (signed) that it masked with each of its neighbours on
  the list, and every client that revealed shares had been forwarded the shares
  of each of its neighbours on it;
- the reveal rule: each client revealed exactly the self-mask shares of the
  owners it held on the list and the key shares of those it held off it; so no
  client revealed both shares of one owner, and no owner had shares of both
  kinds revealed in the round;
- threshold conditions of an aggregated round: t shares of every included
  client's self-mask seed and of every dropped client's mask key, at least t
  included, a connected included graph, every survivor included.

A round left open (no round_close: `view.statement` is None) that holds reveals
is audited by every rule above that does not need the close.

Where payloads are stored, the auditor also replays the unmasking (the same
function the aggregator runs) and checks that the released aggregate is the
unmasked sum and is what the survivors co-signed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from protocols.errors import ProtocolError
from protocols.hazmat.quantize import QuantizationError, decode
from protocols.hazmat.shamir import SHARE_BYTES, ShamirError, decode_share, reconstruct_many
from protocols.messages import Message
from protocols.messages import decode as decode_message
from protocols.secagg import crypto, merkle
from protocols.secagg.context import round_context
from protocols.secagg.graph import graph_seed, harary_graph, is_connected, shareholder_x
from protocols.secagg.messages import (
    KEY_BYTES,
    AdvertiseKeys,
    ConsistencyRequest,
    ForwardShares,
    MaskedInput,
    Release,
    RouteKeys,
    ShareKeys,
    Unmask,
    UnmaskRequest,
)
from protocols.secagg.params import SecAggParams, lowest_threshold, plan_graph, signer_quorum
from protocols.secagg.unmask import from_wire, unmask_total, wire_matches
from protocols.stages import Aggregate

Problems = list[tuple[int, str]]


def transcript_meta(message: Message) -> dict[str, Any] | None:
    """The public facts of a message that the audit needs, recorded and signed with it."""
    if isinstance(message, RouteKeys):
        commitment = merkle.list_commitment(message.round_index, tuple(message.ids),
                                            message.root)
        seed = graph_seed(round_index=message.round_index, degree=message.degree,
                          commitment=commitment)
        return {"ids": list(message.ids), "degree": message.degree,
                "threshold": message.threshold, "length": message.length,
                "dtype": message.dtype, "root": message.root.hex(), "graph_seed": seed.hex()}
    if isinstance(message, ShareKeys):
        return {"receivers": list(message.receivers)}
    if isinstance(message, ForwardShares):
        return {"senders": list(message.senders)}
    if isinstance(message, MaskedInput):
        return {"missing": list(message.missing)}
    if isinstance(message, ConsistencyRequest):
        return {"masked_senders": list(message.masked_senders)}
    if isinstance(message, UnmaskRequest):
        return {"included": list(message.included), "dropped": list(message.dropped),
                "signers": list(message.signers)}
    if isinstance(message, Unmask):
        return {"b": list(message.b_owners), "sk": list(message.sk_owners)}
    if isinstance(message, Release):
        return {"included": list(message.included)}
    return None


_META_KEYS = {
    "RouteKeys": {"ids", "degree", "threshold", "length", "dtype", "root", "graph_seed"},
    "ShareKeys": {"receivers"},
    "ForwardShares": {"senders"},
    "MaskedInput": {"missing"},
    "ConsistencyRequest": {"masked_senders"},
    "UnmaskRequest": {"included", "dropped", "signers"},
    "Unmask": {"b", "sk"},
    "Release": {"included"},
}


def _well_formed(rec: Any) -> bool:
    keys = _META_KEYS.get(rec.stage)
    if keys is None:
        return rec.meta is None
    meta = rec.meta
    if not isinstance(meta, dict) or set(meta) != keys:
        return False
    lists = [v for k, v in meta.items() if k not in {"degree", "threshold", "length", "dtype",
                                                        "root", "graph_seed"}]
    return all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists)


def _same(problems: Problems, recs: Sequence[Any], what: str) -> dict | None:
    if not recs:
        return None
    first = recs[0]
    for rec in recs[1:]:
        if rec.meta != first.meta:
            problems.append((rec.line, f"{what} sent to {rec.receiver} differs from the one sent "
                                       f"to {first.receiver}: the aggregator equivocated"))
    return first.meta


def audit_round(params: SecAggParams, view: Any) -> Problems:
    problems: Problems = []
    by_stage: dict[str, list[Any]] = defaultdict(list)
    for rec in view.records:
        if not _well_formed(rec):
            problems.append((rec.line, f"malformed secagg meta for stage {rec.stage}"))
            return problems
        by_stage[rec.stage].append(rec)
    st = view.statement  # None: a round left open
    line = view.close_line if st is not None else view.records[-1].line if view.records else 0
    aggregated = st is not None and st["outcome"] == "aggregated"
    route = _same(problems, by_stage["RouteKeys"], "the routed key list")
    if route is None:
        if aggregated or by_stage["Unmask"]:
            problems.append((line, "secagg shares were revealed without routed keys"))
        return problems
    first_route = by_stage["RouteKeys"][0]
    k, t = route["degree"], route["threshold"]
    if st is not None:
        n = len(st["survivors"]) + len(st["dropped"])
        try:
            plan = plan_graph(n, params)
        except ProtocolError as exc:
            problems.append((line, f"no valid secagg graph for {n} clients: {exc}"))
            return problems
        if (k, t) != (plan.degree, plan.threshold):
            problems.append((first_route.line, f"graph degree/threshold {k}/{t} differ from "
                             f"the analysis' {plan.degree}/{plan.threshold} for n={n}"))
            return problems
    elif not (isinstance(k, int) and isinstance(t, int) and lowest_threshold(k) <= t <= k):
        problems.append((first_route.line, f"graph degree/threshold {k}/{t} break 2t > k + 1"))
        return problems
    ids = route["ids"]
    graph = harary_graph(ids, degree=k, seed=bytes.fromhex(route["graph_seed"]))
    _neighbour_rules(problems, by_stage, graph)
    signed = _same(problems, by_stage["ConsistencyRequest"], "the survivor list to sign")
    request = _unmask_request(problems, by_stage["UnmaskRequest"])
    if request is not None:
        _list_rules(problems, params, by_stage, request, signed, ids, graph)
    counts = _both_shares_rule(problems, by_stage, graph, request)
    if aggregated and not problems:
        _threshold_rules(problems, params, view, t, graph, request, counts, by_stage)
        if not problems and all(r.payload is not None for r in view.records):
            _replay(problems, params, view, route, graph, request, by_stage)
    return problems


def _neighbour_rules(problems: Problems, by_stage: dict, graph: Mapping) -> None:
    for rec in by_stage["ShareKeys"]:
        wanted = sorted(graph.get(rec.sender, ()))
        if rec.meta["receivers"] and rec.meta["receivers"] != wanted:
            problems.append((rec.line, f"{rec.sender} shared keys with non-neighbours"))
    for rec in by_stage["ForwardShares"]:
        if not set(rec.meta["senders"]) <= graph.get(rec.receiver, frozenset()):
            problems.append((rec.line, f"shares forwarded to {rec.receiver} from non-neighbours"))


def _unmask_request(problems: Problems, recs: Sequence[Any]) -> dict | None:
    if not recs:
        return None
    first = recs[0].meta
    for rec in recs[1:]:
        if rec.meta != first:
            flip = sorted(
                (set(rec.meta["included"]) & set(first["dropped"]))
                | (set(rec.meta["dropped"]) & set(first["included"]))
            )
            who = (f"{flip[0]} is listed as included to some clients and as dropped to others"
                   if flip else "survivor lists differ between clients")
            problems.append((rec.line, who))
    if set(first["included"]) & set(first["dropped"]):
        problems.append((recs[0].line, "a client is listed both as included and as dropped"))
    return first


def _list_rules(problems: Problems, params: SecAggParams, by_stage: dict, request: dict,
                signed: dict | None, ids: list[str], graph: Mapping) -> None:
    """The survivor list L of the unmasking request: signed by a quorum (with the
    consistency round), and every revealing client had masked with its neighbours on L."""
    line = by_stage["UnmaskRequest"][0].line
    listed = set(request["included"])
    if params.consistency_check:
        if signed is None or signed["masked_senders"] != request["included"]:
            problems.append((line, "the unmasking request names a list other than the one "
                                   "sent for signing"))
        signers = request["signers"]
        need = signer_quorum(len(ids), math.ceil(params.collusion_fraction * len(ids)))
        if not set(signers) <= listed or len(set(signers)) < need:
            problems.append((line, f"{len(set(signers) & listed)} signers of the survivor list, "
                                   f"below the quorum of {need}"))
    elif request["signers"]:
        problems.append((line, "signers named in a round without the consistency check"))
    attested = {rec.sender: set(rec.meta["missing"]) for rec in by_stage["MaskedInput"]}
    for cid in sorted(listed):
        gap = sorted(attested.get(cid, listed) & listed)
        if cid not in attested or gap:
            problems.append((line, f"{cid} is on the survivor list but did not mask with "
                                   f"{gap[0] if gap else 'its neighbours'} (or sent no input)"))
            break
    forwarded = {rec.receiver: set(rec.meta["senders"]) for rec in by_stage["ForwardShares"]}
    for rec in by_stage["Unmask"]:
        missing = sorted((graph.get(rec.sender, frozenset()) & listed)
                         - forwarded.get(rec.sender, set()))
        if missing:
            problems.append((rec.line, f"{rec.sender} revealed shares although its neighbour "
                                       f"{missing[0]} is on the list and it never got its shares"))


def _both_shares_rule(
    problems: Problems, by_stage: dict, graph: Mapping, request: dict | None
) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {"b": defaultdict(int), "sk": defaultdict(int)}
    forwarded = {rec.receiver: set(rec.meta["senders"]) for rec in by_stage["ForwardShares"]}
    for rec in by_stage["Unmask"]:
        b, sk = set(rec.meta["b"]), set(rec.meta["sk"])
        both = sorted(b & sk)
        if both:
            problems.append((rec.line, f"both-shares rule: {rec.sender} revealed both shares "
                                       f"of {both[0]}"))
        mine = graph.get(rec.sender, frozenset())
        if not b <= mine | {rec.sender} or not sk <= mine:
            problems.append((rec.line, f"{rec.sender} revealed shares of a non-neighbour"))
        if request is not None and (b or sk):
            held = forwarded.get(rec.sender, set()) | {rec.sender}
            listed = set(request["included"])
            if b != held & listed or sk != held - listed or not sk <= set(request["dropped"]):
                problems.append((rec.line, f"{rec.sender} revealed shares other than the "
                                           "survivor list asks for"))
        elif request is None and (b or sk):
            problems.append((rec.line, f"{rec.sender} revealed shares without an unmasking "
                                       "request"))
        for owner in b:
            counts["b"][owner] += 1
            if counts["sk"][owner]:
                problems.append((rec.line, f"both-shares rule: shares of both secrets of {owner} "
                                           "were revealed in the round"))
        for owner in sk:
            counts["sk"][owner] += 1
            if counts["b"][owner]:
                problems.append((rec.line, f"both-shares rule: shares of both secrets of {owner} "
                                           "were revealed in the round"))
    return counts


def _threshold_rules(
    problems: Problems, params: SecAggParams, view: Any, t: int, graph: Mapping,
    request: dict | None, counts: dict, by_stage: dict,
) -> None:
    line = view.close_line
    if request is None:
        problems.append((line, "an aggregated secagg round without an unmasking request"))
        return
    included, dropped = request["included"], request["dropped"]
    for owner in included:
        if counts["b"][owner] < t:
            problems.append((line, f"threshold: {counts['b'][owner]} shares of {owner}'s "
                                   f"self-mask seed were revealed, {t} needed"))
    for owner in dropped:
        if counts["sk"][owner] < t:
            problems.append((line, f"threshold: {counts['sk'][owner]} shares of {owner}'s "
                                   f"mask key were revealed, {t} needed"))
    if len(included) < t:
        problems.append((line, f"threshold: {len(included)} included clients, {t} needed"))
    if len(included) < params.min_contributors:
        problems.append((line, f"noise floor: {len(included)} included clients, "
                               f"{params.min_contributors} needed"))
    if not is_connected(included, graph):
        problems.append((line, "the included clients' graph is disconnected"))
    outside = sorted(set(view.statement["survivors"]) - set(included))
    if outside:
        problems.append((line, f"survivor {outside[0]} is not among the included clients"))
    for rec in by_stage["Release"]:
        if rec.meta["included"] != included:
            problems.append((rec.line, "the released aggregate names other included clients"))


def _routed_keys_off_root(msg: RouteKeys, ids: tuple[str, ...], index: dict[str, int]) -> bool:
    """Whether some key in `msg` is not the leaf its proof (or the whole list) says."""
    routed, n, m = tuple(msg.routed), len(ids), len(msg.routed)
    if not set(routed) <= set(index) or any(
        len(b) != KEY_BYTES * m for b in (msg.c_pks, msg.s_pks, msg.e_pks)
    ):
        return True
    if routed == ids:
        return merkle.key_list_root(ids, msg.c_pks, msg.s_pks, msg.e_pks) != msg.root
    keys = [crypto.chunks(b, KEY_BYTES) for b in (msg.c_pks, msg.s_pks, msg.e_pks)]
    hashes = crypto.chunks(msg.proofs, merkle.HASH_BYTES)
    at = 0
    for j, cid in enumerate(routed):
        size = merkle.proof_length(index[cid], n)
        leaf = merkle.leaf_hash(index[cid], cid, keys[0][j], keys[1][j], keys[2][j])
        if not merkle.verify_inclusion(leaf, index[cid], n, hashes[at:at + size], msg.root):
            return True
        at += size
    return at != len(hashes) or len(msg.proofs) % merkle.HASH_BYTES != 0


def _replay(
    problems: Problems, params: SecAggParams, view: Any, route: dict, graph: dict,
    request: dict, by_stage: dict,
) -> None:
    """Recompute the unmasked sum from the stored payloads and compare."""
    st = view.statement
    line = view.close_line
    try:
        # Each client was routed its neighbours' keys only; the pairwise masks to
        # remove are those of dropped clients with their neighbours, whose keys the
        # dropped client's own RouteKeys holds. Each routed key is checked against
        # the root every client was sent (one root: `_same` above).
        s_pks: dict[str, bytes] = {}
        ids = tuple(route["ids"])
        index = {c: i for i, c in enumerate(ids)}
        for rec in by_stage["RouteKeys"]:
            msg = decode_message(rec.payload, expected=RouteKeys)
            if _routed_keys_off_root(msg, ids, index):
                problems.append((rec.line, f"the keys routed to {rec.receiver} are not under "
                                           "the key list's root"))
                return
            s_pks.update(zip(msg.routed, crypto.chunks(msg.s_pks, KEY_BYTES), strict=True))
        # Clients check only their neighbours' leaves; the reviewer checks them all:
        # the root is the tree over the keys each client advertised (signed records).
        adverts = {rec.sender: decode_message(rec.payload, expected=AdvertiseKeys)
                   for rec in by_stage["AdvertiseKeys"]}
        if not set(ids) <= set(adverts) or merkle.key_list_root(
            ids, *(b"".join(getattr(adverts[c], f) for c in ids)
                   for f in ("c_pk", "s_pk", "e_pk"))
        ) != bytes.fromhex(route["root"]):
            problems.append((by_stage["RouteKeys"][0].line, "the routed root is not the tree "
                             "over the keys the listed clients advertised"))
            return
        ctx = round_context(params=params, round_index=view.round_index,
                            n=len(st["survivors"]) + len(st["dropped"]),
                            length=route["length"], dtype=route["dtype"])
        xs = shareholder_x(ids)
        masked = {}
        for rec in by_stage["MaskedInput"]:
            msg = decode_message(rec.payload, expected=MaskedInput)
            if rec.sender in request["included"]:
                if not wire_matches(msg.masked, ring=ctx.ring, length=ctx.length):
                    problems.append((rec.line, "an included masked input has the wrong shape"))
                    return
                masked[rec.sender] = msg.masked
        b_sets: dict[str, list] = defaultdict(list)
        sk_sets: dict[str, list] = defaultdict(list)
        for rec in by_stage["Unmask"]:
            msg = decode_message(rec.payload, expected=Unmask)
            for owners, blob, sets in ((msg.b_owners, msg.b_shares, b_sets),
                                       (msg.sk_owners, msg.sk_shares, sk_sets)):
                for owner, share in zip(owners, crypto.chunks(blob, SHARE_BYTES), strict=True):
                    sets[owner].append((xs[rec.sender], decode_share(share)))
        total = unmask_total(
            round_index=view.round_index, ring=ctx.ring, length=ctx.length, masked=masked,
            b_seeds=reconstruct_many(b_sets, threshold=ctx.threshold),
            dropped_keys=reconstruct_many(sk_sets, threshold=ctx.threshold),
            s_pks=s_pks, graph=graph)
        decoded = decode(total, fixed=ctx.fixed, ring=ctx.ring, integer=ctx.integer,
                         n=len(request["included"]))
    except (ProtocolError, ShamirError, QuantizationError, ValueError, KeyError) as exc:
        problems.append((line, f"replaying the unmasking from the payloads failed: {exc}"))
        return
    digest = Aggregate(weighted_sum=decoded.weighted_sum,
                       total_weight=decoded.total_weight).digest()
    for rec in by_stage["Release"]:
        released = decode_message(rec.payload, expected=Release).total
        if not (from_wire(released, ring=ctx.ring) == total).all():
            problems.append((rec.line, "the released aggregate is not the unmasked sum"))
            return
    if st["aggregate"] != digest:
        problems.append((line, "the co-signed aggregate is not the unmasked sum of the payloads"))
