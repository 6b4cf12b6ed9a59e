"""Removing the masks: the one computation the aggregator and a transcript
auditor both run, so a reviewer replays exactly what the aggregator did.

sum_{u in S} y_u - sum_{u in S} PRG(b_u) -/+ PRG(s_vw) for every dropped v and
included neighbour w (w added the mask if w < v, subtracted it otherwise);
pairwise masks between two included clients cancel by themselves.

Ring elements travel in `bits // 8` bytes each: as the native unsigned type
when that is 1, 2, 4 or 8 bytes, else as a (m, bits // 8) byte array.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from protocols.hazmat.prg import reduce_ring
from protocols.hazmat.quantize import Ring
from protocols.secagg.crypto import add_pair_mask, add_self_mask, agreement_key, pair_sign_adds
from protocols.secagg.crypto import pairwise_seed as derive_pair_seed
from protocols.secagg.graph import Graph


def to_wire(values: np.ndarray, *, ring: Ring) -> np.ndarray:
    if ring.wire_bytes == ring.dtype.itemsize:
        return values
    as_bytes = values.view(np.uint8).reshape(values.size, ring.dtype.itemsize)
    return np.ascontiguousarray(as_bytes[:, : ring.wire_bytes])


def wire_matches(arr: np.ndarray, *, ring: Ring, length: int) -> bool:
    if ring.wire_bytes == ring.dtype.itemsize:
        return arr.dtype == ring.dtype and arr.shape == (length,)
    return arr.dtype == np.uint8 and arr.shape == (length, ring.wire_bytes)


def from_wire(arr: np.ndarray, *, ring: Ring) -> np.ndarray:
    """Ring elements (each < 2^bits by construction of the wire); may be a read-only view."""
    if ring.wire_bytes == ring.dtype.itemsize:
        return np.asarray(arr, dtype=ring.dtype)
    full = np.zeros((arr.shape[0], ring.dtype.itemsize), dtype=np.uint8)
    full[:, : ring.wire_bytes] = arr
    return full.view(ring.dtype).reshape(arr.shape[0])


def unmask_total(
    *,
    round_index: int,
    ring: Ring,
    length: int,
    masked: Mapping[str, np.ndarray],
    b_seeds: Mapping[str, bytes],
    dropped_keys: Mapping[str, bytes],
    s_pks: Mapping[str, bytes],
    graph: Graph,
) -> np.ndarray:
    """The ring sum of the included clients' encodings (`masked` holds wire arrays)."""
    acc = np.zeros(length, dtype=ring.dtype)
    for cid in sorted(masked):
        np.add(acc, from_wire(masked[cid], ring=ring), out=acc)
    for cid in sorted(b_seeds):
        add_self_mask(acc, b_seeds[cid], bits=ring.bits, subtract=True)
    for v in sorted(dropped_keys):
        key = agreement_key(dropped_keys[v])
        for w in sorted(graph[v] & masked.keys()):
            seed = derive_pair_seed(key, s_pks[w], round_index=round_index, a=v, b=w)
            add_pair_mask(acc, seed, bits=ring.bits, subtract=pair_sign_adds(w, v))
    return reduce_ring(acc, bits=ring.bits)
