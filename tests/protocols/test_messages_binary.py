"""Binary fields: id lists and byte strings travel in the payload, with one encoding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import MessageDecodeError, ProtocolInputError
from protocols.messages import decode, encode, pack_ids, unpack_ids
from protocols.secagg.messages import ShareKeys

ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}", fullmatch=True)


def _share_keys(receivers, sealed) -> ShareKeys:
    return ShareKeys(round_index=1, sender="c0", receiver="agg", receivers=receivers,
                     sealed=sealed)


@given(st.lists(ID, max_size=20).map(tuple), st.binary(max_size=300))
def test_binary_fields_round_trip(ids: tuple[str, ...], blob: bytes) -> None:
    msg = _share_keys(ids, blob)
    back = decode(encode(msg))
    assert back.receivers == ids and back.sealed == blob
    assert encode(back) == encode(msg)
    assert unpack_ids(pack_ids(ids)) == ids


def test_ids_and_bytes_are_not_hex_or_json_in_the_header() -> None:
    ids = tuple(f"client-{i:04d}" for i in range(200))
    keys = bytes(range(256)) * 25
    wire = encode(_share_keys(ids, keys))
    assert keys.hex().encode() not in wire and b"client-0199" in wire
    assert len(wire) < len(keys) + len(pack_ids(ids)) + 600


@pytest.mark.parametrize("raw", [b"\x00", b"\x03ab", b"\x02a b"[:4], b"\x01 ", b"\x02\xff\xfe",
                                 b"\x01-"])
def test_malformed_id_bytes_are_refused(raw: bytes) -> None:
    assert unpack_ids(raw) is None
    good = encode(_share_keys(("ab",), b""))
    bad = good.replace(b"\x02ab", raw[:3].ljust(3, b"\x00"))
    with pytest.raises(MessageDecodeError):
        decode(bad)


def test_a_party_id_list_refuses_non_ids() -> None:
    with pytest.raises(ProtocolInputError):
        _share_keys(("a b",), b"")
    with pytest.raises(ProtocolInputError):
        _share_keys(("x" * 129,), b"")
    assert np.frombuffer(pack_ids(("a", "bc")), dtype=np.uint8).tolist() == [1, 97, 2, 98, 99]
