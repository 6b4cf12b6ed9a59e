"""The SecAgg+ neighbour graph: a randomly permuted Harary graph H(n, k).

Clients sit on a ring in an order drawn from the graph seed; each is joined to
the k/2 nearest on either side (k even; k >= n - 1 is the complete graph).
The seed is SHA-256 over the round, the parameters and every advertised public
key, so each client recomputes the graph itself and the aggregator cannot pick
it: it can only influence it by dropping clients before keys are routed.
Shareholder x-coordinates are positions in the sorted id list, plus one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from protocols.hazmat.prg import ring_elements
from protocols.messages import canonical_json

Graph = Mapping[str, frozenset[str]]
_DOMAIN = b"securediff/secagg/v1/graph-seed\n"


def graph_seed(
    *,
    round_index: int,
    degree: int,
    ids: Sequence[str],
    keys: Sequence[bytes],
) -> bytes:
    """The 32-byte seed of the round's graph: every client's advertised key material."""
    head = canonical_json({"round": round_index, "degree": degree, "ids": list(ids)})
    h = hashlib.sha256(_DOMAIN + head)
    for key in keys:
        h.update(len(key).to_bytes(2, "big") + key)
    return h.digest()


def harary_graph(ids: Sequence[str], *, degree: int, seed: bytes) -> dict[str, frozenset[str]]:
    """Neighbours of every id (symmetric, no self loops)."""
    ordered = sorted(ids)
    n = len(ordered)
    if degree >= n - 1:
        everyone = frozenset(ordered)
        return {c: everyone - {c} for c in ordered}
    # A uniform permutation: sort by 64-bit keys from the PRG (ties broken by id).
    ranks = ring_elements(seed, count=n, bits=64, nonce=b"graph-permutation")
    ring = [ordered[i] for i in np.lexsort((np.arange(n), ranks))]
    half = degree // 2
    out = {}
    for pos, cid in enumerate(ring):
        out[cid] = frozenset(
            ring[(pos + d) % n] for d in range(-half, half + 1) if d != 0
        )
    return out


def shareholder_x(ids: Sequence[str]) -> dict[str, int]:
    """The public Shamir x-coordinate of each client: its rank in the sorted ids, plus one."""
    return {c: i + 1 for i, c in enumerate(sorted(ids))}


def is_connected(nodes: Collection[str], graph: Graph) -> bool:
    """Whether the subgraph induced on `nodes` is connected (True when empty)."""
    todo = set(nodes)
    if not todo:
        return True
    stack = [todo.pop()]
    while stack:
        for peer in graph[stack.pop()]:
            if peer in todo:
                todo.discard(peer)
                stack.append(peer)
    return not todo
