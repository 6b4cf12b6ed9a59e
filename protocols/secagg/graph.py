"""The SecAgg+ neighbour graph: a randomly permuted Harary graph H(n, k).

Clients sit on a ring in an order drawn from the graph seed; each is joined to
the k/2 nearest on either side (k even; k >= n - 1 is the complete graph).
The seed is SHA-256 over the round, the degree and the commitment to the key
list (the id list and the Merkle root of every advertised public key), so each
client recomputes the graph from the root it was routed and the aggregator
cannot pick it: it can only influence it by dropping clients before keys are
routed, and every client signs the commitment with the survivor list.
Shareholder x-coordinates are positions in the sorted id list, plus one.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType

import numpy as np

from protocols.hazmat.prg import ring_elements
from protocols.messages import canonical_json

Graph = Mapping[str, frozenset[str]]
_DOMAIN = b"securediff/secagg/v1/graph-seed\n"


def graph_seed(*, round_index: int, degree: int, commitment: bytes) -> bytes:
    """The 32-byte seed of the round's graph, from the commitment to the routed key
    list (`merkle.list_commitment`: the round, the id list and the Merkle root of
    every advertised key): fixed once the keys are, before any client is told it."""
    head = canonical_json({"round": round_index, "degree": degree})
    return hashlib.sha256(_DOMAIN + head + b"\n" + commitment).digest()


def harary_graph(ids: Sequence[str], *, degree: int, seed: bytes) -> Graph:
    """Neighbours of every id (symmetric, no self loops), as a read-only mapping."""
    return _harary_graph(tuple(ids), degree, seed)


# Every party of a round builds the same graph from the same public inputs; the
# in-process simulation plays all n of them, so the graph (n * k entries) is made
# once per round and shared read-only instead of n times (docs/performance.md).
@functools.lru_cache(maxsize=8)
def _harary_graph(ids: tuple[str, ...], degree: int, seed: bytes) -> Graph:
    ordered = sorted(ids)
    n = len(ordered)
    if degree >= n - 1:
        everyone = frozenset(ordered)
        return MappingProxyType({c: everyone - {c} for c in ordered})
    # A uniform permutation: sort by 64-bit keys from the PRG (ties broken by id).
    ranks = ring_elements(seed, count=n, bits=64, nonce=b"graph-permutation")
    ring = [ordered[i] for i in np.lexsort((np.arange(n), ranks))]
    half = degree // 2
    doubled = ring[-half:] + ring + ring[:half]  # position p's window is doubled[p : p + 2 half + 1]
    out = {}
    for pos, cid in enumerate(ring):
        out[cid] = frozenset(doubled[pos : pos + half] + doubled[pos + half + 1 : pos + 2 * half + 1])
    return MappingProxyType(out)


def shareholder_x(ids: Sequence[str]) -> dict[str, int]:
    """The public Shamir x-coordinate of each client: its rank in the sorted ids, plus one."""
    return {c: i + 1 for i, c in enumerate(sorted(ids))}


# Every client checks that the survivors' subgraph is connected: O(n k) each, so
# O(n^2 k) for the simulation that plays all n of them on one shared graph. The
# answer depends only on the (immutable) graph and the node set, so it is kept
# for the few latest questions; the entry holds the graph, so its id is not reused.
_CONNECTED: OrderedDict[tuple[int, frozenset[str]], tuple[Graph, bool]] = OrderedDict()
_CONNECTED_KEPT = 16
_CONNECTED_LOCK = threading.Lock()


def is_connected(nodes: Collection[str], graph: Graph) -> bool:
    """Whether the subgraph induced on `nodes` is connected (True when empty)."""
    # harary_graph returns read-only views of dicts nobody else holds; any other
    # mapping might change between two questions, so it is not remembered.
    if not isinstance(graph, MappingProxyType):
        return _connected(nodes, graph)
    key = (id(graph), frozenset(nodes))
    with _CONNECTED_LOCK:
        hit = _CONNECTED.get(key)
    if hit is not None and hit[0] is graph:
        return hit[1]
    answer = _connected(key[1], graph)
    with _CONNECTED_LOCK:
        _CONNECTED[key] = (graph, answer)
        while len(_CONNECTED) > _CONNECTED_KEPT:
            _CONNECTED.popitem(last=False)
    return answer


def _connected(nodes: Collection[str], graph: Graph) -> bool:
    todo = set(nodes)
    if not todo:
        return True
    stack = [todo.pop()]
    while stack:
        reached = todo.intersection(graph[stack.pop()])  # set operations run in C
        todo -= reached
        stack.extend(reached)
    return not todo
