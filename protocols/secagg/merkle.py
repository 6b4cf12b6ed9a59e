"""The Merkle tree over a round's advertised key list, and its inclusion proofs.

Leaf i (ids sorted) is SHA-256 over 0x00, a domain string, i as 4 bytes, the id
(one length byte, ASCII) and the client's three 32-byte public keys (c, s, e);
an inner node is SHA-256 over 0x01 and its two children; the root is SHA-256
over 0x02, a domain string, the number of leaves and the top node (an RFC 9162
audit path alone does not fix the tree size: index 0 has the same path in
trees of 17 and 18 leaves). Distinct prefixes keep a leaf, a node and a root
apart. The tree has the shape of RFC 9162 (Certificate Transparency v2): the
left subtree of n > 1 leaves holds the largest power of two below n. A proof
therefore binds (index, id, keys) to the root of a list of n keys: the same
keys under another index or id, or in a list of another size, do not verify.

`list_commitment` binds the root to the id list it was routed with and to the
round: the graph is derived from it and every client signs it with the
survivor list, so two clients routed different lists, or the same root with
different id lists, sign different statements.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

from protocols.messages import pack_ids

_LEAF = b"\x00securediff/secagg/v1/key-leaf\n"
_NODE = b"\x01"
_ROOT = b"\x02securediff/secagg/v1/key-root\n"
_LIST = b"\x03securediff/secagg/v1/key-list\n"
HASH_BYTES = 32
KEY_BYTES = 32


def leaf_hash(index: int, cid: str, c_pk: bytes, s_pk: bytes, e_pk: bytes) -> bytes:
    raw = cid.encode("ascii")
    if not (0 <= index < 1 << 32 and 0 < len(raw) < 256):
        raise ValueError("leaf index or id out of range")
    if not len(c_pk) == len(s_pk) == len(e_pk) == KEY_BYTES:
        raise ValueError("public keys are 32 bytes")
    return hashlib.sha256(_LEAF + index.to_bytes(4, "big") + bytes((len(raw),)) + raw
                          + c_pk + s_pk + e_pk).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _sized(size: int, top: bytes) -> bytes:
    return hashlib.sha256(_ROOT + size.to_bytes(4, "big") + top).digest()


def tree_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    return _sized(len(leaves), _Ranges(leaves).root(0, len(leaves)))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> tuple[bytes, ...]:
    """The audit path of leaf `index`, from the leaf up."""
    return _Ranges(leaves).proof(index)


def inclusion_proofs(leaves: Sequence[bytes], indices: Sequence[int]) -> list[tuple[bytes, ...]]:
    """Audit paths of several leaves, sharing the subtree hashes (n log n in all)."""
    tree = _Ranges(leaves)
    return [tree.proof(i) for i in indices]


class _Ranges:
    """Roots of the subtrees [lo, hi) of one list of leaves, each computed once."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = tuple(leaves)
        self.memo: dict[tuple[int, int], bytes] = {}

    def root(self, lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return self.leaves[lo]
        got = self.memo.get((lo, hi))
        if got is None:
            mid = lo + _split(hi - lo)
            got = self.memo[(lo, hi)] = _node(self.root(lo, mid), self.root(mid, hi))
        return got

    def proof(self, index: int) -> tuple[bytes, ...]:
        if not 0 <= index < len(self.leaves):
            raise ValueError("leaf index out of range")
        path, lo, hi = [], 0, len(self.leaves)
        while hi - lo > 1:
            mid = lo + _split(hi - lo)
            if index < mid:
                path.append(self.root(mid, hi))
                hi = mid
            else:
                path.append(self.root(lo, mid))
                lo = mid
        return tuple(reversed(path))


def proof_length(index: int, size: int) -> int:
    """How many hashes the audit path of `index` in a tree of `size` leaves has."""
    if not 0 <= index < size:
        raise ValueError("leaf index out of range")
    depth = 0
    while size > 1:
        k = _split(size)
        index, size = (index, k) if index < k else (index - k, size - k)
        depth += 1
    return depth


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> bool:
    """RFC 9162, 2.1.3.2: whether `proof` places `leaf` at `index` of a tree of `size`
    leaves with `root`."""
    return _verify(leaf, index, size, tuple(proof), root)


# Pure; each routed key set is checked by the k + 1 clients it is routed to, which
# the in-process simulation plays all at once: remembered, like the advert checks.
@functools.lru_cache(maxsize=1 << 14)
def _verify(leaf: bytes, index: int, size: int, proof: tuple[bytes, ...], root: bytes) -> bool:
    if not 0 <= index < size < 1 << 32 or any(len(p) != HASH_BYTES for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and _sized(size, r) == root


@functools.lru_cache(maxsize=8)
def key_list_leaves(ids: tuple[str, ...], c_pks: bytes, s_pks: bytes,
                    e_pks: bytes) -> tuple[bytes, ...]:
    """The leaves of a whole key list (keys concatenated in `ids` order). Pure and
    remembered: the aggregator and, in an unbound round, every client hash the same list."""
    at = range(0, KEY_BYTES * len(ids), KEY_BYTES)
    return tuple(leaf_hash(i, cid, c_pks[a:a + KEY_BYTES], s_pks[a:a + KEY_BYTES],
                           e_pks[a:a + KEY_BYTES])
                 for i, (cid, a) in enumerate(zip(ids, at, strict=True)))


@functools.lru_cache(maxsize=8)
def key_list_root(ids: tuple[str, ...], c_pks: bytes, s_pks: bytes, e_pks: bytes) -> bytes:
    return tree_root(key_list_leaves(ids, c_pks, s_pks, e_pks))


@functools.lru_cache(maxsize=64)
def list_commitment(round_index: int, ids: tuple[str, ...], root: bytes) -> bytes:
    """What the graph is derived from and what clients sign with the survivor list:
    the round, the routed id list and the root of its keys."""
    return hashlib.sha256(_LIST + round_index.to_bytes(8, "big")
                          + len(ids).to_bytes(4, "big") + pack_ids(ids) + root).digest()
