"""Typed protocol messages and their one canonical, versioned byte encoding.

Wire format, version 1 (integers little-endian):

    magic b"SDPM" | u16 version | u16 type code | u32 header length | u64 payload length
    header:  canonical JSON {"arrays": [{"dtype", "name", "shape"}, ...], "fields": {...}}
    payload: the arrays' raw little-endian bytes, packed in declared order

Fields declared `Binary` (bytes) or `PartyIds` (a tuple of party ids) travel
in the payload as 1-D "|u1" arrays instead of hex or JSON strings in the
header: a Binary field is its raw bytes, a PartyIds field is each id as one
length byte and its ASCII characters, in order. Both have one encoding (the
decoder checks every id and consumes the array exactly).

Canonical JSON is sorted keys, no spaces, ASCII, integers as integers, floats in
Python's shortest round-trip form. The decoder re-encodes the header it parsed
and refuses anything not byte-identical, so every message has exactly one
encoding and its SHA-256 is a well-defined payload digest for the transcript.
It checks every claimed length against the bytes actually present before
touching them, so a hostile length can cause neither a hang nor an allocation.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import re
import struct
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np

from protocols.errors import MessageDecodeError, ProtocolInputError

MAGIC = b"SDPM"
FORMAT_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 30
MAX_HEADER_BYTES = 1 << 20
MAX_ARRAY_DIMS = 4
MAX_STRING_CHARS = 4096
_PREFIX = struct.Struct("<4sHHIQ")
PREFIX_BYTES = _PREFIX.size

# The only array dtypes on the wire, named as numpy spells little-endian dtypes.
WIRE_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name) for name in ("<f4", "<f8", "<i4", "<i8", "<u4", "<u8", "|u1")
}

_PARTY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
# A whole id list checked by one regex over its ids joined by newlines (which no
# id may contain): id lists are n long and n messages carry one, so one C-level
# match per list instead of n Python-level calls (docs/performance.md).
_ID_LINES = r"(?:[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127})(?:\n[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127})*"
_PARTY_ID_LINES = re.compile(_ID_LINES)
_PARTY_ID_LINES_BYTES = re.compile(_ID_LINES.encode("ascii"))
_KINDS = {int: "int", float: "float", str: "str", bool: "bool", bytes: "bytes", np.ndarray: "array"}
_BINARY = "securediff/binary"
Binary = typing.Annotated[bytes, _BINARY]
PartyIds = typing.Annotated[tuple[str, ...], _BINARY]
_PAYLOAD_KINDS = frozenset({"array", "blob", "ids"})


# One encoder built once: `json.dumps` with options builds a new JSONEncoder per
# call, which was half the cost of the ~500,000 small encodings (key-derivation
# contexts, records) of a 1000-client round. Same options, same bytes.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                              allow_nan=False)


def canonical_json(obj: Any) -> bytes:
    """The one JSON encoding used for message headers, transcript records and rosters."""
    return _CANONICAL.encode(obj).encode("ascii")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_party_id(value: object) -> str:
    """Party ids are short printable ASCII tokens, safe in JSON, paths and logs."""
    if not isinstance(value, str) or _PARTY_ID.fullmatch(value) is None:
        raise ProtocolInputError(
            f"invalid party id {value!r}: 1-128 characters of [A-Za-z0-9._:@+-], "
            "starting with a letter or digit"
        )
    return value


@dataclasses.dataclass(frozen=True, eq=False)
class Message:
    """Base of every protocol message. Subclasses are declared with `message_type`;
    fields may be int, float, str, bool, bytes, tuple[str, ...] or np.ndarray.
    Arrays travel in the payload and are read-only after decoding; compare messages
    by their `encode` bytes (instances compare by identity)."""

    TYPE_CODE: ClassVar[int]
    TYPE_NAME: ClassVar[str]
    STAGE: ClassVar[str]
    SCHEMA: ClassVar[tuple[tuple[str, str], ...]]

    round_index: int
    sender: str
    receiver: str

    def __post_init__(self) -> None:
        if type(self) is Message or "SCHEMA" not in vars(type(self)):
            raise ProtocolInputError(f"{type(self).__name__} is not a registered message type")
        for name, kind in self.SCHEMA:
            object.__setattr__(self, name, _coerce(kind, name, getattr(self, name)))
        check_party_id(self.sender)
        check_party_id(self.receiver)
        if self.round_index < 0:
            raise ProtocolInputError("round_index must be non-negative")


_BY_CODE: dict[int, type[Message]] = {}
_BY_NAME: dict[str, type[Message]] = {}
M = TypeVar("M", bound=Message)


def message_type(*, code: int, name: str, stage: str) -> Callable[[type[M]], type[M]]:
    """Register a message class under a wire type code and a transcript name."""

    def register(cls: type[M]) -> type[M]:
        if not 0 < code < 1 << 16:
            raise ProtocolInputError(f"message type code {code} out of range")
        if code in _BY_CODE or name in _BY_NAME:
            raise ProtocolInputError(f"message type {name!r} / code {code:#06x} already registered")
        cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
        hints = typing.get_type_hints(cls, include_extras=True)
        schema = []
        for field in dataclasses.fields(cls):
            hint = hints[field.name]
            if hint == Binary:
                kind = "blob"
            elif hint == PartyIds:
                kind = "ids"
            else:
                kind = "strs" if hint == tuple[str, ...] else _KINDS.get(hint)
            if kind is None:
                raise ProtocolInputError(f"{cls.__name__}.{field.name}: unsupported type {hint}")
            schema.append((field.name, kind))
        cls.TYPE_CODE, cls.TYPE_NAME, cls.STAGE = code, name, stage
        cls.SCHEMA = tuple(schema)
        _BY_CODE[code] = cls
        _BY_NAME[name] = cls
        return cls

    return register


def message_class(name: str) -> type[Message]:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ProtocolInputError(f"unknown message type {name!r}") from None


def _coerce(kind: str, name: str, value: Any) -> Any:
    """Validate one field at construction (floats accept ints; arrays become little-endian)."""
    numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    if kind == "int":
        if not isinstance(value, int | np.integer) or not numeric:
            raise ProtocolInputError(f"{name} must be an int, got {value!r}")
        if not -(1 << 63) <= int(value) < 1 << 63:
            raise ProtocolInputError(f"{name} must fit in 64 bits")
        return int(value)
    elif kind == "float":
        if not numeric or not math.isfinite(value):
            raise ProtocolInputError(f"{name} must be a finite float, got {value!r}")
        return float(value)
    elif kind == "bool":
        if type(value) is not bool:
            raise ProtocolInputError(f"{name} must be a bool")
    elif kind == "str":
        if not isinstance(value, str) or len(value) > MAX_STRING_CHARS:
            raise ProtocolInputError(f"{name} must be a string of at most {MAX_STRING_CHARS} chars")
    elif kind in ("bytes", "blob"):
        if not isinstance(value, bytes):
            raise ProtocolInputError(f"{name} must be bytes")
    elif kind == "ids":
        items = tuple(value) if isinstance(value, list | tuple) else None
        if items is None or not (
            all(map(isinstance, items, itertools.repeat(str)))
            and _ids_valid(items)
        ):
            raise ProtocolInputError(f"{name} must be a tuple of party ids")
        return items
    elif kind == "strs":
        items = tuple(value) if isinstance(value, list | tuple) else None
        # map() keeps the per-item checks in C: id lists are n long, and n messages carry one.
        if items is None or not (
            all(map(isinstance, items, itertools.repeat(str)))
            and max(map(len, items), default=0) <= MAX_STRING_CHARS
        ):
            raise ProtocolInputError(f"{name} must be a tuple of strings")
        return items
    else:  # array
        if not isinstance(value, np.ndarray):
            raise ProtocolInputError(f"{name} must be a numpy array")
        wire = value.dtype.newbyteorder("<") if value.dtype.byteorder != "|" else value.dtype
        if wire.str not in WIRE_DTYPES:
            raise ProtocolInputError(f"{name}: dtype {value.dtype} is not allowed on the wire")
        if not 1 <= value.ndim <= MAX_ARRAY_DIMS:
            raise ProtocolInputError(f"{name} must have 1 to {MAX_ARRAY_DIMS} dimensions")
        return value.astype(wire, copy=False)
    return value


def encode(message: Message) -> bytes:
    """The canonical bytes of `message` (see the module docstring for the layout)."""
    fields: dict[str, Any] = {}
    arrays: list[dict[str, Any]] = []
    chunks: list[memoryview] = []
    for name, kind in message.SCHEMA:
        value = getattr(message, name)
        if kind in _PAYLOAD_KINDS:
            if kind == "blob":
                arr = np.frombuffer(value, dtype=np.uint8)
            elif kind == "ids":
                arr = np.frombuffer(pack_ids(value), dtype=np.uint8)
            else:
                arr = np.ascontiguousarray(value)
            arrays.append({"dtype": arr.dtype.str, "name": name, "shape": list(arr.shape)})
            chunks.append(memoryview(arr).cast("B"))
        elif kind == "bytes":
            fields[name] = value.hex()
        elif kind == "strs":
            fields[name] = list(value)
        else:
            fields[name] = value
    header = canonical_json({"arrays": arrays, "fields": fields})
    payload_len = sum(c.nbytes for c in chunks)
    if (
        PREFIX_BYTES + len(header) + payload_len > MAX_MESSAGE_BYTES
        or len(header) > MAX_HEADER_BYTES
    ):
        raise ProtocolInputError(f"{message.TYPE_NAME} exceeds the maximum message size")
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, message.TYPE_CODE, len(header), payload_len)
    return b"".join([prefix, header, *chunks])


def decode(
    data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, expected: type[Message] | None = None
) -> Message:
    """Parse and fully check one message; any defect raises `MessageDecodeError`."""
    if not isinstance(data, bytes):
        raise MessageDecodeError("a message must be given as bytes")
    size = len(data)
    if size > max_bytes:
        raise MessageDecodeError(f"message of {size} bytes exceeds the maximum of {max_bytes}")
    if size < PREFIX_BYTES:
        raise MessageDecodeError("message shorter than its fixed prefix")
    magic, version, code, header_len, payload_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise MessageDecodeError("bad magic: not a securediff protocol message")
    if version != FORMAT_VERSION:
        raise MessageDecodeError(f"unsupported message format version {version}")
    if header_len > MAX_HEADER_BYTES or PREFIX_BYTES + header_len + payload_len != size:
        raise MessageDecodeError("declared header/payload lengths do not match the message size")
    cls = _BY_CODE.get(code)
    if cls is None:
        raise MessageDecodeError(f"unknown message type code {code:#06x}")
    if expected is not None and cls is not expected:
        raise MessageDecodeError(f"expected {expected.TYPE_NAME}, got {cls.TYPE_NAME}")
    header_bytes = data[PREFIX_BYTES : PREFIX_BYTES + header_len]
    try:
        header = json.loads(
            header_bytes.decode("ascii"),
            parse_constant=_reject_constant,
            object_pairs_hook=_reject_duplicates,
        )
        canonical = canonical_json(header)
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise MessageDecodeError(f"header is not valid canonical JSON: {exc}") from None
    if canonical != header_bytes:
        raise MessageDecodeError("header is not in canonical form")
    kwargs = _header_values(cls, header, data, PREFIX_BYTES + header_len, payload_len)
    try:
        return cls(**kwargs)
    except ProtocolInputError as exc:
        raise MessageDecodeError(f"{cls.TYPE_NAME}: {exc}") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _header_values(
    cls: type[Message], header: Any, data: bytes, payload_start: int, payload_len: int
) -> dict[str, Any]:
    if not isinstance(header, dict) or set(header) != {"arrays", "fields"}:
        raise MessageDecodeError("header must hold exactly 'arrays' and 'fields'")
    fields, arrays = header["fields"], header["arrays"]
    scalar_names = {n for n, k in cls.SCHEMA if k not in _PAYLOAD_KINDS}
    array_names = [n for n, k in cls.SCHEMA if k in _PAYLOAD_KINDS]
    kinds = dict(cls.SCHEMA)
    if not isinstance(fields, dict) or set(fields) != scalar_names:
        raise MessageDecodeError(f"{cls.TYPE_NAME}: header fields differ from the message schema")
    if not isinstance(arrays, list) or len(arrays) != len(array_names):
        raise MessageDecodeError(f"{cls.TYPE_NAME}: wrong number of arrays")
    out: dict[str, Any] = {}
    for name, kind in cls.SCHEMA:
        if kind not in _PAYLOAD_KINDS:
            out[name] = _json_field(cls, name, kind, fields[name])
    offset = 0
    for name, meta in zip(array_names, arrays, strict=True):
        if not isinstance(meta, dict) or set(meta) != {"dtype", "name", "shape"}:
            raise MessageDecodeError(f"{cls.TYPE_NAME}: malformed array declaration")
        dtype = WIRE_DTYPES.get(meta["dtype"]) if isinstance(meta["dtype"], str) else None
        shape = meta["shape"]
        if meta["name"] != name or dtype is None:
            raise MessageDecodeError(
                f"{cls.TYPE_NAME}: array {name!r} misdeclared or dtype refused"
            )
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= MAX_ARRAY_DIMS
            or not all(type(d) is int and 0 <= d <= payload_len for d in shape)
        ):
            raise MessageDecodeError(f"{cls.TYPE_NAME}: array {name!r} has an invalid shape")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if offset + nbytes > payload_len:
            raise MessageDecodeError(f"{cls.TYPE_NAME}: arrays claim more bytes than the payload")
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=payload_start + offset)
        offset += nbytes
        if kinds[name] == "array":
            out[name] = arr.reshape(shape)
            continue
        if meta["dtype"] != "|u1" or len(shape) != 1:
            raise MessageDecodeError(f"{cls.TYPE_NAME}: {name!r} must be a 1-D |u1 array")
        raw = arr.tobytes()
        if kinds[name] == "blob":
            out[name] = raw
        else:
            ids = unpack_ids(raw)
            if ids is None:
                raise MessageDecodeError(f"{cls.TYPE_NAME}: {name!r} is not a list of party ids")
            out[name] = ids
    if offset != payload_len:
        raise MessageDecodeError(f"{cls.TYPE_NAME}: payload longer than its declared arrays")
    return out


def _ids_valid(ids: tuple[str, ...]) -> bool:
    """Every item a party id (the items are known to be strings)."""
    if not ids:
        return True
    joined = "\n".join(ids)
    # An item holding a newline would pass as two ids: count the separators too.
    return joined.count("\n") == len(ids) - 1 and _PARTY_ID_LINES.fullmatch(joined) is not None


# An id list is O(n) to pack and unpack, and n messages of a round carry the same
# one: the in-process simulation, which plays every party, converts each distinct
# list once (both functions are pure; the results are immutable).
def pack_ids(ids: tuple[str, ...]) -> bytes:
    """The binary form of a list of party ids: per id, its length in one byte, then
    its ASCII characters (party ids are 1-128 ASCII characters)."""
    ids = tuple(ids)
    if not all(map(isinstance, ids, itertools.repeat(str))):
        raise ProtocolInputError("not a list of party ids")
    return _pack_ids(ids)


@functools.lru_cache(maxsize=16)
def _pack_ids(ids: tuple[str, ...]) -> bytes:
    if not _ids_valid(ids):
        raise ProtocolInputError("not a list of party ids")
    # chr(1..128) is one latin-1 byte and the ids are ASCII: one join, one encode.
    return "".join([chr(len(i)) + i for i in ids]).encode("latin-1")


@functools.lru_cache(maxsize=16)
def unpack_ids(raw: bytes) -> tuple[str, ...] | None:
    """The ids of `pack_ids` output, or None unless `raw` is exactly such a list."""
    items, at, end = [], 0, len(raw)
    while at < end:
        size = raw[at]
        if size == 0 or at + 1 + size > end:
            return None
        items.append(raw[at + 1 : at + 1 + size])
        at += 1 + size
    if not items:
        return ()
    joined = b"\n".join(items)  # newline is no id character: a match checks every id
    if joined.count(b"\n") != len(items) - 1 or _PARTY_ID_LINES_BYTES.fullmatch(joined) is None:
        return None
    return tuple(joined.decode("ascii").split("\n"))


def _lowercase_hex(value: Any) -> bytes | None:
    """The bytes of `value` if it is pairs of [0-9a-f] and nothing else, else None.

    `bytes.fromhex` also takes upper case and whitespace; the round trip refuses
    both, so this accepts exactly what the regex (?:[0-9a-f]{2})* does, in C at
    memory speed (the regex took 40 us per routed key list at n = 100)."""
    if type(value) is not str:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if raw.hex() == value else None


def _json_field(cls: type[Message], name: str, kind: str, value: Any) -> Any:
    if kind == "bytes":
        raw = _lowercase_hex(value)
        if raw is None:
            raise MessageDecodeError(f"{cls.TYPE_NAME}: field {name!r} has the wrong JSON type")
        return raw
    ok = {
        "int": type(value) is int,
        "float": type(value) is float,
        "str": type(value) is str,
        "bool": type(value) is bool,
        "strs": type(value) is list and set(map(type, value)) <= {str},
    }[kind]
    if not ok:
        raise MessageDecodeError(f"{cls.TYPE_NAME}: field {name!r} has the wrong JSON type")
    return value
