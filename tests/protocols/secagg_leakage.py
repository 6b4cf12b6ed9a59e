"""An active secagg aggregator, played step by step, and an oracle for what it learns.

`play(adversary)` runs one secagg round between honest clients (the protocol's
own client steps) and an aggregator that deviates as `adversary` says: per
client it chooses which key list to route (equivocating about U1 gives a
client another root and graph), which forwarded shares to withhold, which survivor list to
send for signing and which unmasking request to send (lists, dropped lists and
signers), and whether to substitute a routed key; a set of colluding clients
gives it their secrets, their shares and their signatures on any list. An
honest client that refuses stops talking; the others go on, as they would on a
network.

`learnable(outcome)` is the oracle. It does not read the clients' states: from
the messages the aggregator received and sent, and from what the colluders
hold, it counts the Shamir shares the adversary has of every secret (a secret
is known from t shares), derives which self masks and pairwise masks it can
compute, and returns a basis of the linear combinations of honest inputs it can
evaluate (the left null space of the unknown masks over GF(p), p = 2^61 - 1).
Each honest client's masks are those of the partners it was actually forwarded
shares from, not the static graph.

`violation(outcome, basis)` checks the guarantee: everything the adversary can
compute lies in the span of the sum of honest inputs over one survivor list L
that honest clients unmasked for, with |L| >= max(t, min_contributors), and
nothing when no honest client unmasked.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from protocols.errors import ProtocolAbort
from protocols.messages import decode, encode
from protocols.roster import Identities
from protocols.secagg import SecAggProtocol, crypto
from protocols.secagg import server as srv
from protocols.secagg.messages import ConsistencyRequest, ForwardShares, UnmaskRequest
from protocols.stages import ClientInput, make_setup

PRIME = (1 << 61) - 1
# An edit of the honest survivor list U3: (clients added, clients removed, and the
# neighbours of a victim, by rank in its sorted neighbour list, also removed; a
# rank beyond its degree is ignored). Ranks let a strategy drawn before the round
# aim at the graph the round's keys produce.
Edit = tuple[frozenset[str], frozenset[str], str | None, frozenset[int]]
_IDS_CACHE: dict[int, Identities] = {}


def identities(n: int) -> Identities:
    if n not in _IDS_CACHE:
        _IDS_CACHE[n] = Identities.generate([f"p{i:02d}" for i in range(n)])
    return _IDS_CACHE[n]


@dataclass
class Adversary:
    """The aggregator's choices. Lists are tuples of client ids; any field left
    empty means the honest choice for that client."""

    colluders: frozenset[str] = frozenset()
    drop_before: Mapping[str, str] = field(default_factory=dict)  # honest client -> stage
    # receiver -> ranks of the neighbours whose forwarded shares it does not get
    withhold_shares: Mapping[str, frozenset[int]] = field(default_factory=dict)
    substitute_key_for: Mapping[str, str] = field(default_factory=dict)  # receiver -> owner
    # receiver -> clients left out of the key list routed to it: another id list,
    # another root and graph than the other clients get (equivocation about U1)
    route_without: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # receiver -> server stage at which it is sent its message relabelled with another
    # round's index (a replay of another round or session)
    replay_at: Mapping[str, str] = field(default_factory=dict)
    # colluder -> the key it advertises for pairwise masks instead of its own, signed
    # with its roster key: "low-order" (the all-zero point) or "copy" (an honest
    # client's key, relayed as its own)
    colluder_keys: Mapping[str, str] = field(default_factory=dict)
    # Per client, the list sent for signing / unmasking as an edit of the honest list
    # U3 (the masked inputs received): (clients added, clients removed).
    sign_lists: Mapping[str, Edit] = field(default_factory=dict)
    unmask_lists: Mapping[str, Edit] = field(default_factory=dict)
    # Per client, whom the request names dropped: "u2" (the honest U2 - L) or "all"
    # (everyone off L).
    dropped_as: Mapping[str, str] = field(default_factory=dict)
    # A hand-written attack sees the round's graph once keys are routed and returns
    # the adversary to play from there on.
    adapt: Callable[[Mapping[str, frozenset[str]]], Adversary] | None = None


@dataclass
class Outcome:
    protocol: SecAggProtocol
    ids: tuple[str, ...]
    colluders: frozenset[str]
    threshold: int
    min_contributors: int
    graph: Mapping[str, frozenset[str]] = field(default_factory=dict)
    partners: dict[str, frozenset[str]] = field(default_factory=dict)  # forwarded to each
    senders: set[str] = field(default_factory=set)  # masked inputs received
    revealed_b: dict[str, set[str]] = field(default_factory=dict)  # owner -> shareholders
    revealed_sk: dict[str, set[str]] = field(default_factory=dict)
    answered_lists: dict[str, tuple[str, ...]] = field(default_factory=dict)  # honest -> L
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def honest(self) -> list[str]:
        return [c for c in self.ids if c not in self.colluders]


def _carry(msg):
    return decode(encode(msg))


def play(protocol: SecAggProtocol, n: int, adversary: Adversary) -> Outcome:
    ids_ = identities(n)
    protocol = protocol.bind(ids_)
    ids = ids_.client_ids
    agg = ids_.aggregator_id
    setup = make_setup(protocol, round_index=0, aggregator_id=agg, participants=ids,
                       vector=ClientInput(vector=np.zeros(1), weight=1.0).spec)
    ctx = protocol._context(setup)
    out = Outcome(protocol=protocol, ids=ids, colluders=adversary.colluders,
                  threshold=ctx.threshold, min_contributors=ctx.min_contributors)
    clients = {
        c: protocol.client_start(setup=setup, client_id=c,
                                 client_input=ClientInput(vector=np.zeros(1), weight=1.0),
                                 random_bytes=_rb(c, adversary.colluders))
        for c in ids
    }
    alive = set(ids)  # honest clients still talking; colluders always answer

    def gone(cid: str, stage: str) -> bool:
        return cid not in adversary.colluders and adversary.drop_before.get(cid) == stage

    def client_send(stage: str) -> dict[str, object]:
        got = {}
        for c in sorted(alive):
            if gone(c, stage):
                alive.discard(c)
                continue
            clients[c], (msg,) = protocol.client_step(stage, clients[c], ())
            got[c] = _carry(msg)
        return got

    def client_take(stage: str, inbox: Mapping[str, object]) -> None:
        for c in sorted(alive):
            if gone(c, stage):
                alive.discard(c)
                continue
            msg = inbox.get(c)
            if msg is not None and adversary.replay_at.get(c) == stage:
                msg = dataclasses.replace(msg, round_index=msg.round_index + 1)
            try:
                clients[c], _ = protocol.client_step(stage, clients[c],
                                                     [_carry(msg)] if msg is not None else [])
            except ProtocolAbort as exc:
                out.refused[c] = str(exc)
                alive.discard(c)

    data = srv.ServerData(ctx=ctx)
    adverts = client_send("AdvertiseKeys")
    for col, how in adversary.colluder_keys.items():
        if col in adverts and col in adversary.colluders:
            honest = [c for c in sorted(adverts) if c not in adversary.colluders]
            s_pk = bytes(32) if how == "low-order" or not honest else adverts[honest[0]].s_pk
            msg = adverts[col]
            statement = crypto.advertise_statement(
                round_index=0, client_id=col, c_pk=msg.c_pk, s_pk=s_pk, e_pk=msg.e_pk,
                params=ctx.params_digest)
            adverts[col] = dataclasses.replace(msg, s_pk=s_pk,
                                               id_sig=ids_.signing_key(col).sign(statement))
    data, _ = srv.receive_keys(data, list(adverts.values()), ids_.roster())
    keyed = data
    data, routed = srv.route_keys(data, sorted(adverts), agg)
    other_view = {}
    for c, left_out in adversary.route_without.items():
        keep = sorted(set(adverts) - left_out)
        if c in keep and len(keep) < len(adverts):
            _, view = srv.route_keys(keyed, keep, agg)
            other_view[c] = next(m for m in view if m.receiver == c)
    out.graph = data.graph
    if adversary.adapt is not None:
        adversary = adversary.adapt(data.graph)
    inbox = {}
    for msg in routed:
        msg = other_view.get(msg.receiver, msg)
        owner = adversary.substitute_key_for.get(msg.receiver)
        if owner is not None and owner in msg.routed and owner != msg.receiver:
            i = msg.routed.index(owner)
            c_pks = bytearray(msg.c_pks)
            c_pks[32 * i: 32 * i + 32] = os.urandom(32)
            msg = dataclasses.replace(msg, c_pks=bytes(c_pks))
        inbox[msg.receiver] = msg
    client_take("RouteKeys", inbox)
    shares = client_send("ShareKeys")
    data, _ = srv.receive_shares(data, list(shares.values()))
    u2 = tuple(sorted(data.sealed))
    data = dataclasses.replace(data, u2=u2)
    inbox = {}
    for w in u2:  # forwarded whatever the honest server's recovery check would say
        ranks = adversary.withhold_shares.get(w, frozenset())
        held_back = set() if w in adversary.colluders else _ranked(data.graph, w, ranks)
        senders = tuple(sorted(v for v in data.graph[w] if v in data.sealed
                               and v not in held_back))
        inbox[w] = ForwardShares(round_index=0, sender=agg, receiver=w, senders=senders,
                                 sealed=b"".join(data.sealed[v][w] for v in senders))
        out.partners[w] = frozenset(senders)
    client_take("ForwardShares", inbox)
    masked = client_send("MaskedInput")
    out.senders = {c for c, m in masked.items() if m.masked.size}
    u3 = tuple(sorted(out.senders))
    signatures: dict[tuple[str, ...], dict[str, bytes]] = {}
    consistency = protocol.config.consistency_check
    if consistency:
        inbox = {c: ConsistencyRequest(round_index=0, sender=agg, receiver=c,
                                       masked_senders=_edit(u3, adversary.sign_lists.get(c),
                                                             data.graph))
                 for c in ids}
        client_take("ConsistencyRequest", inbox)
        signed = client_send("ConsistencySign")
        for c, msg in signed.items():
            lst = inbox[c].masked_senders
            if c in adversary.colluders:
                continue
            if msg.signature:
                signatures.setdefault(tuple(lst), {})[c] = msg.signature
    def attest(member: str) -> tuple[tuple[str, ...], bytes]:
        """A member's signed word on whom it did not mask with: its own, a colluder's
        lie (nobody missing), or nothing the adversary can sign for."""
        if member in adversary.colluders:
            sig = ids_.signing_key(member).sign(crypto.missing_statement(
                round_index=0, client_id=member, missing=()))
            return (), sig
        if member in out.senders:
            return tuple(masked[member].missing), masked[member].missing_sig
        return (), bytes(64)

    inbox = {}
    for c in ids:
        lst = _edit(u3, adversary.unmask_lists.get(c), data.graph)
        pool = set(ids) if adversary.dropped_as.get(c) == "all" else set(data.u2)
        dropped = tuple(sorted(pool - set(lst)))
        sigs = dict(signatures.get(lst, {}))
        if consistency:
            for col in adversary.colluders:  # colluders sign whatever list it takes
                if col in lst:
                    sigs[col] = ids_.signing_key(col).sign(_statement(lst, data.commitment))
        signers = tuple(sorted(s for s in sigs if s in lst)) if consistency else ()
        inbox[c] = UnmaskRequest(
            round_index=0, sender=agg, receiver=c, included=lst, dropped=dropped,
            signed_list=lst if consistency else (), signers=signers,
            signatures=b"".join(sigs[s] for s in signers),
            missing=tuple(crypto.join_ids(attest(m)[0]) for m in lst),
            missing_sigs=b"".join(attest(m)[1] for m in lst))
    client_take("UnmaskRequest", inbox)
    answers = client_send("Unmask")
    for c, msg in answers.items():
        if c in adversary.colluders or not (msg.b_owners or msg.sk_owners):
            continue
        out.answered_lists[c] = tuple(inbox[c].included)
        for owner in msg.b_owners:
            out.revealed_b.setdefault(owner, set()).add(c)
        for owner in msg.sk_owners:
            out.revealed_sk.setdefault(owner, set()).add(c)
    # Colluders hand over every share they hold (their own and those forwarded to them).
    for col in adversary.colluders:
        for owner in clients[col].data.held:
            out.revealed_b.setdefault(owner, set()).add(col)
            out.revealed_sk.setdefault(owner, set()).add(col)
    return out


def _ranked(graph: Mapping[str, frozenset[str]], who: str, ranks: frozenset[int]) -> set[str]:
    neighbours = sorted(graph.get(who, ()))
    return {neighbours[i] for i in ranks if i < len(neighbours)}


def _edit(u3: tuple[str, ...], edit: Edit | None, graph) -> tuple[str, ...]:
    if edit is None:
        return u3
    added, removed, victim, ranks = edit
    removed = set(removed) | (_ranked(graph, victim, ranks) if victim else set())
    return tuple(sorted((set(u3) | added) - removed))


def _statement(lst: tuple[str, ...], commitment: bytes) -> bytes:
    return crypto.consistency_statement(round_index=0, masked_senders=lst,
                                        commitment=commitment)


def _rb(cid: str, colluders: frozenset[str]):
    """Honest clients draw from the OS; colluders' keys are the adversary's choice."""
    if cid not in colluders:
        return os.urandom
    from protocols.hazmat.prg import prg_stream

    return prg_stream(b"\x07" * 32, nonce=f"colluder/{cid}".encode())


def learnable(out: Outcome) -> tuple[list[str], list[list[int]]]:
    """(honest senders, basis of the combinations of their inputs the adversary can compute)."""
    t = out.threshold
    col = out.colluders
    knows_b = {o for o, h in out.revealed_b.items() if len(h) >= t} | set(col)
    knows_sk = {o for o, h in out.revealed_sk.items() if len(h) >= t} | set(col)
    rows = [u for u in sorted(out.senders) if u not in col]
    variables: dict[tuple, int] = {}
    matrix: list[dict[int, int]] = []
    for u in rows:
        coeffs: dict[int, int] = {}
        if u not in knows_b:
            coeffs[variables.setdefault(("b", u), len(variables))] = 1
        for v in out.partners.get(u, ()):
            if u in knows_sk or v in knows_sk:
                continue
            var = variables.setdefault(("pair", *sorted((u, v))), len(variables))
            coeffs[var] = (coeffs.get(var, 0) + (1 if u < v else PRIME - 1)) % PRIME
        matrix.append(coeffs)
    return rows, _left_null_space(matrix, len(rows))


def _left_null_space(matrix: list[dict[int, int]], r: int) -> list[list[int]]:
    """Basis of {a : sum_i a_i row_i = 0} over GF(PRIME), by elimination on [M | I]."""
    rows = [(dict(m), {i: 1}) for i, m in enumerate(matrix)]
    pivots: list[tuple[int, dict[int, int], dict[int, int]]] = []
    basis = []
    for left, right in rows:
        for col, pl, pr in pivots:
            c = left.get(col, 0)
            if c:
                for k, v in pl.items():
                    left[k] = (left.get(k, 0) - c * v) % PRIME
                for k, v in pr.items():
                    right[k] = (right.get(k, 0) - c * v) % PRIME
                left = {k: v for k, v in left.items() if v}
        if left:
            col = min(left)
            inv = pow(left[col], PRIME - 2, PRIME)
            left = {k: v * inv % PRIME for k, v in left.items()}
            right = {k: v * inv % PRIME for k, v in right.items()}
            pivots.append((col, left, right))
        else:
            basis.append([right.get(i, 0) % PRIME for i in range(r)])
    return basis


def violation(out: Outcome, rows: list[str], basis: list[list[int]]) -> str | None:
    """Why what the adversary learned breaks the guarantee, or None."""
    if not basis:
        return None
    lists = set(out.answered_lists.values())
    if len(basis) > 1:
        return f"{len(basis)} independent combinations of honest inputs are computable"
    vec = basis[0]
    support = {rows[i] for i, a in enumerate(vec) if a}
    values = {a for a in vec if a}
    if len(values) != 1:
        return f"a weighted combination of honest inputs over {sorted(support)} is computable"
    floor = max(out.threshold, out.min_contributors)
    for lst in lists:
        if support == set(lst) & set(rows) and len(set(lst) & out.senders) >= floor:
            return None
    return (f"the sum over {sorted(support)} is computable, which is not the honest part of "
            f"a survivor list of at least {floor} that honest clients unmasked for "
            f"(lists answered: {sorted(lists)})")


def check(protocol: SecAggProtocol, n: int, adversary: Adversary) -> tuple[Outcome, str | None]:
    out = play(protocol, n, adversary)
    rows, basis = learnable(out)
    return out, violation(out, rows, basis)


