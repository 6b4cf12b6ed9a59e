"""The fast paths of id lists, key-derivation contexts and graph connectivity
give exactly what the plain definitions give, on any input (Hypothesis)."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import ProtocolInputError
from protocols.messages import _PARTY_ID, _coerce, canonical_json, pack_ids, unpack_ids
from protocols.secagg import crypto
from protocols.secagg.graph import harary_graph, is_connected

# Characters that party ids allow, some they do not (JSON escapes, newline, non-ASCII).
_CHARS = "aZ0._:@+-" + '"\\\n /é\x00'
texts = st.text(alphabet=_CHARS, max_size=6)
id_lists = st.lists(texts, max_size=6)


def _reference_unpack(raw: bytes) -> tuple[str, ...] | None:
    """The format's definition, one id at a time."""
    out, at = [], 0
    while at < len(raw):
        size, item = raw[at], raw[at + 1 : at + 1 + raw[at]]
        if size == 0 or len(item) != size:
            return None
        try:
            text = item.decode("ascii")
        except UnicodeDecodeError:
            return None
        if _PARTY_ID.fullmatch(text) is None:
            return None
        out.append(text)
        at += 1 + size
    return tuple(out)


_PIECES = [b"\x01a", b"\x02ab", b"\x01\n", b"\x03a\nb", b"\x00", b"\x80", b"\x02a\xff", b"\x05a", b"\x01-"]


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=24) | st.lists(st.sampled_from(_PIECES), max_size=6).map(b"".join))
def test_unpack_ids_matches_the_definition(raw):
    assert unpack_ids(raw) == _reference_unpack(raw)


@settings(max_examples=1000, deadline=None)
@given(id_lists)
def test_id_lists_are_checked_item_by_item(items):
    valid = all(_PARTY_ID.fullmatch(i) for i in items)
    try:
        _coerce("ids", "ids", tuple(items))
        accepted = True
    except ProtocolInputError:
        accepted = False
    assert accepted == valid
    if valid:
        assert unpack_ids(pack_ids(tuple(items))) == tuple(items)
    else:  # an id holding a newline must not pass as two ids
        try:
            pack_ids(tuple(items))
            raise AssertionError("pack_ids accepted an invalid id")
        except ProtocolInputError:
            pass


@settings(max_examples=1000, deadline=None)
@given(texts, texts, st.integers(-3, 1 << 40) | st.booleans(), id_lists)
def test_contexts_are_the_canonical_json_of_their_fields(purpose, stage, round_index, parties):
    expected = canonical_json({"proto": crypto.VERSION, "purpose": purpose, "round": round_index,
                               "stage": stage, "parties": list(parties)})
    assert crypto.context(purpose, round_index=round_index, stage=stage, parties=parties) == expected


def _reachable(nodes, graph) -> bool:
    nodes = set(nodes)
    if not nodes:
        return True
    seen, todo = set(), [next(iter(nodes))]
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo.extend(w for w in graph[v] if w in nodes)
    return seen == nodes


@settings(max_examples=300, deadline=None)
@given(st.integers(3, 30), st.integers(1, 8), st.integers(0, 1 << 30),
       st.lists(st.lists(st.booleans(), min_size=30, max_size=30), min_size=1, max_size=4))
def test_connectivity_answers_match_a_search_also_when_remembered(n, half, seed, picks):
    ids = [f"c{i:02d}" for i in range(n)]
    graph = harary_graph(ids, degree=2 * half, seed=hashlib.sha256(seed.to_bytes(8, "big")).digest())
    for pick in picks + picks:  # each set asked twice: the second answer is remembered
        nodes = [c for c, keep in zip(ids, pick, strict=False) if keep]
        assert is_connected(nodes, graph) == _reachable(nodes, graph)
        assert is_connected(tuple(reversed(nodes)), dict(graph)) == _reachable(nodes, graph)
