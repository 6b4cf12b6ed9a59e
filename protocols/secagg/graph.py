"""The SecAgg+ neighbour graph: a randomly permuted Harary graph H(n, k).

Clients sit on a ring in an order drawn from the graph seed; each is joined to
the k/2 nearest on either side (k even; k >= n - 1 is the complete graph).
The seed is SHA-256 over the round, the parameters and every advertised public
key, so each client recomputes the graph itself and the aggregator cannot pick
it: it can only influence it by dropping clients before keys are routed.
Shareholder x-coordinates are positions in the sorted id list, plus one.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType

import numpy as np

from protocols.hazmat.prg import ring_elements
from protocols.messages import canonical_json

Graph = Mapping[str, frozenset[str]]
_DOMAIN = b"securediff/secagg/v1/graph-seed\n"
_KEY_BYTES = 32


def graph_seed(
    *,
    round_index: int,
    degree: int,
    ids: Sequence[str],
    keys: Sequence[bytes],
) -> bytes:
    """The 32-byte seed of the round's graph: every client's advertised key material."""
    return _graph_seed(round_index, degree, tuple(ids), tuple(keys))


def routed_graph_seed(*, round_index: int, degree: int, ids: Sequence[str], c_pks: bytes,
                      s_pks: bytes, e_pks: bytes) -> bytes:
    """`graph_seed` of a routed key list: the keys of ids[i] are the i-th 32 bytes of
    each concatenation, hashed in the order (c, s, e) per client."""
    return _routed_graph_seed(round_index, degree, tuple(ids), c_pks, s_pks, e_pks)


@functools.lru_cache(maxsize=8)
def _routed_graph_seed(round_index: int, degree: int, ids: tuple[str, ...], c_pks: bytes,
                       s_pks: bytes, e_pks: bytes) -> bytes:
    columns = [[b[i : i + _KEY_BYTES] for i in range(0, len(b), _KEY_BYTES)]
               for b in (c_pks, s_pks, e_pks)]
    keys = tuple(k for triple in zip(*columns, strict=True) for k in triple)
    return _graph_seed(round_index, degree, ids, keys)


# Pure, and computed by every party (and the transcript) from the same 3n keys:
# remembered, so the in-process simulation hashes them once per round, not n times.
@functools.lru_cache(maxsize=8)
def _graph_seed(round_index: int, degree: int, ids: tuple[str, ...],
                keys: tuple[bytes, ...]) -> bytes:
    head = canonical_json({"round": round_index, "degree": degree, "ids": list(ids)})
    h = hashlib.sha256(_DOMAIN + head)
    for key in keys:
        h.update(len(key).to_bytes(2, "big") + key)
    return h.digest()


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


def is_connected(nodes: Collection[str], graph: Graph) -> bool:
    """Whether the subgraph induced on `nodes` is connected (True when empty)."""
    todo = set(nodes)
    if not todo:
        return True
    stack = [todo.pop()]
    while stack:
        reached = todo.intersection(graph[stack.pop()])  # set operations run in C
        todo -= reached
        stack.extend(reached)
    return not todo
