"""Canonical message encoding: pinned bytes, exact round trips, and a decoder that
refuses every malformed input with `MessageDecodeError` only."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocols.errors import MessageDecodeError, ProtocolInputError
from protocols.messages import MAGIC, Message, decode, encode, message_type
from protocols.plain import BroadcastAggregate, SubmitUpdate

SUBMIT = 0x0101


def _submit(vector: np.ndarray, **overrides: object) -> SubmitUpdate:
    fields = {"round_index": 3, "sender": "c0", "receiver": "aggregator", "weight": 2.5}
    fields.update(overrides)
    return SubmitUpdate(vector=vector, **fields)


def _frame(code: int, header: bytes, payload: bytes, *, version: int = 1) -> bytes:
    """Assemble a message by hand with self-consistent lengths."""
    return MAGIC + struct.pack("<HHIQ", version, code, len(header), len(payload)) + header + payload


def _header(fields: dict, arrays: list) -> bytes:
    return json.dumps(
        {"arrays": arrays, "fields": fields}, sort_keys=True, separators=(",", ":")
    ).encode()


GOOD_FIELDS = {"receiver": "aggregator", "round_index": 3, "sender": "c0", "weight": 2.5}
GOOD_ARRAYS = [{"dtype": "<f4", "name": "vector", "shape": [2]}]
GOOD_PAYLOAD = np.array([1.0, -2.0], dtype="<f4").tobytes()


def test_encoding_is_pinned_byte_for_byte() -> None:
    header = (
        b'{"arrays":[{"dtype":"<f4","name":"vector","shape":[2]}],'
        b'"fields":{"receiver":"aggregator","round_index":3,"sender":"c0","weight":2.5}}'
    )
    payload = bytes.fromhex("0000803f000000c0")  # 1.0f, -2.0f little-endian
    expected = (
        b"SDPM"
        + bytes.fromhex("0100")  # version 1
        + bytes.fromhex("0101")  # type 0x0101
        + len(header).to_bytes(4, "little")
        + (8).to_bytes(8, "little")
        + header
        + payload
    )
    assert encode(_submit(np.array([1.0, -2.0], dtype=np.float32))) == expected


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", ">f8"])
def test_submit_round_trips_byte_exactly(dtype: str) -> None:
    vector = (np.arange(7) - 3).astype(dtype)
    data = encode(_submit(vector))
    back = decode(data, expected=SubmitUpdate)
    assert isinstance(back, SubmitUpdate)
    assert encode(back) == data
    assert back.vector.dtype == np.dtype(dtype).newbyteorder("<")
    np.testing.assert_array_equal(back.vector, vector)
    assert (back.round_index, back.sender, back.receiver, back.weight) == (
        3,
        "c0",
        "aggregator",
        2.5,
    )
    assert not back.vector.flags.writeable  # a decoded message is immutable


def test_broadcast_round_trips() -> None:
    msg = BroadcastAggregate(
        round_index=0,
        sender="aggregator",
        receiver="c1",
        total_weight=3.0,
        survivors=["c0", "c1"],
        weighted_sum=np.array([0.5, -0.0, 1e-300]),
    )
    back = decode(encode(msg))
    assert isinstance(back, BroadcastAggregate) and back.survivors == ("c0", "c1")
    assert back.weighted_sum.tobytes() == msg.weighted_sum.tobytes()  # -0.0 survives bitwise
    assert encode(back) == encode(msg)


@settings(max_examples=60, deadline=None)
@given(
    vector=hnp.arrays(np.float64, st.integers(0, 40), elements=st.floats(allow_nan=False)),
    weight=st.floats(min_value=0, allow_infinity=False),
    round_index=st.integers(0, 2**63 - 1),
)
def test_round_trip_property(vector: np.ndarray, weight: float, round_index: int) -> None:
    msg = _submit(vector, weight=weight, round_index=round_index)
    data = encode(msg)
    back = decode(data)
    assert back.vector.tobytes() == vector.tobytes() and back.weight == weight
    assert encode(back) == data


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "shorter"),
        (b"XXXX" + _frame(SUBMIT, _header(GOOD_FIELDS, GOOD_ARRAYS), GOOD_PAYLOAD)[4:], "magic"),
        (_frame(SUBMIT, _header(GOOD_FIELDS, GOOD_ARRAYS), GOOD_PAYLOAD, version=2), "version"),
        (_frame(0x7777, _header(GOOD_FIELDS, GOOD_ARRAYS), GOOD_PAYLOAD), "unknown message type"),
        (_frame(SUBMIT, _header(GOOD_FIELDS, GOOD_ARRAYS), GOOD_PAYLOAD)[:-1], "lengths"),
        (_frame(SUBMIT, _header(GOOD_FIELDS, GOOD_ARRAYS), GOOD_PAYLOAD) + b"\0", "lengths"),
        # a claimed 2**62-byte payload is refused from the prefix alone, before any allocation
        (MAGIC + struct.pack("<HHIQ", 1, SUBMIT, 10, 2**62) + b"{}" * 5, "lengths"),
        (_frame(SUBMIT, _header(GOOD_FIELDS, GOOD_ARRAYS) + b" ", GOOD_PAYLOAD), "canonical"),
        (_frame(SUBMIT, b'{"fields":{},"arrays":[]}', b""), "canonical"),
        (_frame(SUBMIT, b'{"arrays":[],"arrays":[]}', b""), "JSON"),
        (_frame(SUBMIT, b"\xff\xfe", b""), "JSON"),
        (
            _frame(SUBMIT, _header(GOOD_FIELDS, GOOD_ARRAYS).replace(b"2.5", b"NaN"), GOOD_PAYLOAD),
            "JSON",
        ),
        (
            _frame(SUBMIT, _header({**GOOD_FIELDS, "weight": 2}, GOOD_ARRAYS), GOOD_PAYLOAD),
            "wrong JSON type",
        ),
        (
            _frame(
                SUBMIT, _header({**GOOD_FIELDS, "round_index": True}, GOOD_ARRAYS), GOOD_PAYLOAD
            ),
            "wrong JSON type",
        ),
        (
            _frame(SUBMIT, _header({**GOOD_FIELDS, "extra": 1}, GOOD_ARRAYS), GOOD_PAYLOAD),
            "schema",
        ),
        (
            _frame(SUBMIT, _header({**GOOD_FIELDS, "sender": "c 0"}, GOOD_ARRAYS), GOOD_PAYLOAD),
            "party id",
        ),
        (
            _frame(SUBMIT, _header(GOOD_FIELDS, [{**GOOD_ARRAYS[0], "dtype": "<f2"}]), b"\0" * 4),
            "dtype",
        ),
        (
            _frame(
                SUBMIT, _header(GOOD_FIELDS, [{**GOOD_ARRAYS[0], "dtype": ">f4"}]), GOOD_PAYLOAD
            ),
            "dtype",
        ),
        (
            _frame(SUBMIT, _header(GOOD_FIELDS, [{**GOOD_ARRAYS[0], "shape": [3]}]), GOOD_PAYLOAD),
            "more bytes",
        ),
        (
            _frame(SUBMIT, _header(GOOD_FIELDS, [{**GOOD_ARRAYS[0], "shape": [1]}]), GOOD_PAYLOAD),
            "longer",
        ),
        (
            _frame(
                SUBMIT, _header(GOOD_FIELDS, [{**GOOD_ARRAYS[0], "shape": [2**40]}]), GOOD_PAYLOAD
            ),
            "shape",
        ),
        (
            _frame(SUBMIT, _header(GOOD_FIELDS, [{**GOOD_ARRAYS[0], "shape": []}]), GOOD_PAYLOAD),
            "shape",
        ),
        (_frame(SUBMIT, _header(GOOD_FIELDS, []), b""), "number of arrays"),
    ],
)
def test_decoder_refuses_malformed_messages(data: bytes, needle: str) -> None:
    with pytest.raises(MessageDecodeError, match=needle):
        decode(data)


def test_decoder_size_type_and_expected_checks() -> None:
    data = encode(_submit(np.zeros(4)))
    assert decode(_frame(SUBMIT, _header(GOOD_FIELDS, GOOD_ARRAYS), GOOD_PAYLOAD)).weight == 2.5
    with pytest.raises(MessageDecodeError, match="exceeds"):
        decode(data, max_bytes=len(data) - 1)
    with pytest.raises(MessageDecodeError, match="expected"):
        decode(data, expected=BroadcastAggregate)
    with pytest.raises(MessageDecodeError, match="bytes"):
        decode(bytearray(data))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides",
    [
        {"weight": float("nan")},
        {"weight": float("inf")},
        {"weight": True},
        {"round_index": -1},
        {"round_index": 2**63},
        {"sender": ""},
        {"receiver": "x" * 129},
        {"vector": np.zeros(3, dtype=np.float16)},
        {"vector": np.zeros(3, dtype=object)},
        {"vector": np.float64(1.0)},
        {"vector": [1.0, 2.0]},
    ],
)
def test_construction_validates_fields(overrides: dict) -> None:
    vector = overrides.pop("vector", np.zeros(3))
    with pytest.raises(ProtocolInputError):
        _submit(vector, **overrides)


def test_registry_refuses_duplicates_and_bare_messages() -> None:
    with pytest.raises(ProtocolInputError, match="already registered"):

        @message_type(code=SUBMIT, name="test.Duplicate", stage="X")
        class Duplicate(Message):
            weight: float

    with pytest.raises(ProtocolInputError):
        Message(round_index=0, sender="a", receiver="b")


# -- fuzzing: any bytes in, `MessageDecodeError` or a canonical message out ----------------

VALID = [
    encode(_submit(np.array([1.5, -2.0, 3.25]))),
    encode(_submit(np.arange(5, dtype=np.int64))),
    encode(
        BroadcastAggregate(
            round_index=7,
            sender="aggregator",
            receiver="c2",
            total_weight=1.0,
            survivors=("c1", "c2"),
            weighted_sum=np.array([0.25]),
        )
    ),
]


def _decode_or_refuse(data: bytes) -> None:
    try:
        msg = decode(data)
    except MessageDecodeError:
        return
    assert encode(msg) == data  # anything accepted is in its one canonical form


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_or_refuse(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([0x0101, 0x0102, 0x0000, 0xFFFF]))
def test_fuzz_after_a_valid_prefix(rest: bytes, code: int) -> None:
    _decode_or_refuse(MAGIC + struct.pack("<HH", 1, code) + rest)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.dictionaries(
        st.sampled_from(["receiver", "round_index", "sender", "weight", "survivors", "x"]),
        _json,
        max_size=6,
    ),
    arrays=st.lists(
        st.dictionaries(
            st.sampled_from(["dtype", "name", "shape", "x"]),
            st.one_of(_json, st.sampled_from(["<f4", "<f8", "vector", "weighted_sum"])),
        ),
        max_size=2,
    ),
    payload=st.binary(max_size=64),
    code=st.sampled_from([0x0101, 0x0102]),
)
def test_fuzz_structured_headers(fields: dict, arrays: list, payload: bytes, code: int) -> None:
    try:
        header = _header(fields, arrays)
    except ValueError:  # NaN / inf cannot even be written canonically
        return
    _decode_or_refuse(_frame(code, header, payload))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzz_mutated_valid_messages(data: st.DataObject) -> None:
    raw = bytearray(data.draw(st.sampled_from(VALID)))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "delete"]))
        i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "truncate":
            del raw[i:]
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "overwrite":
            chunk = data.draw(st.binary(min_size=1, max_size=8))
            raw[i : i + len(chunk)] = chunk
        elif raw:
            del raw[i : i + data.draw(st.integers(1, 8))]
    _decode_or_refuse(bytes(raw))
