"""The transcript's record format: version, signing domains, record shapes, the
digests that chain records and that a round's close statement names.

Shared by the writer, which signs these records, and the verifier, which checks
them; changing anything here changes the bytes every party signs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from protocols.errors import MessageDecodeError
from protocols.messages import Message, canonical_json, decode, sha256_hex
from protocols.stages import AggregationProtocol

TRANSCRIPT_VERSION = 1
CLOSE_STAGE = "RoundClose"
RECORD_DOMAIN = b"securediff/transcript/v1/record\n"
COSIG_DOMAIN = b"securediff/transcript/v1/cosig\n"
LIST_DOMAIN = b"securediff/transcript/v1/records\n"
# The problem named when a record slips past every named check and a check raises.
UNCHECKABLE = "record could not be checked (malformed)"
HEX64 = re.compile(r"[0-9a-f]{64}")
HEX128 = re.compile(r"[0-9a-f]{128}")


def records_digest(digests: Sequence[str]) -> str:
    """The digest of a round's ordered record list, as its close statement names it."""
    return sha256_hex(LIST_DOMAIN + "\n".join(digests).encode("ascii"))


def statement_digest(statement: Mapping[str, Any]) -> str:
    return sha256_hex(canonical_json(statement))


def cosig_digest(cosig: Mapping[str, Any]) -> str:
    return sha256_hex(canonical_json(cosig))


def unsigned_bytes(obj: Mapping[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in obj.items() if k != "sig"})


def payload_dir(path: Path) -> Path:
    """Where the payloads of transcript `path` are stored when asked for."""
    return path.with_name(path.name + ".payloads")


def message_meta(protocol: AggregationProtocol | None, payload: bytes,
                 message: Message | None = None) -> dict[str, Any] | None:
    """The protocol's public facts about one message (None if it records none);
    `message` is `payload` decoded, when the caller has it."""
    meta_of = getattr(protocol, "transcript_meta", None)
    if meta_of is None:
        return None
    try:
        return meta_of(message if message is not None else decode(payload))
    except MessageDecodeError:
        return None


def looks_like_header(raw: bytes) -> bool:
    try:
        rec = json.loads(raw)
    except ValueError:
        return False
    return (
        isinstance(rec, dict) and rec.get("v") == TRANSCRIPT_VERSION and rec.get("kind") == "header"
    )


OPT_STR = (str, type(None))
SCHEMAS: dict[str, dict[str, Any]] = {
    "header": {
        "session": int,
        "protocol": str,
        "params": dict,
        "roster": str,
        "rounds": (list, type(None)),  # absent in transcripts written before it existed
    },
    "message": {
        "session": int,
        "round": int,
        "stage": str,
        "type": str,
        "receiver": str,
        "payload_sha256": str,
        "payload_size": int,
        "meta": (dict, type(None)),
    },
    "round_close": {
        "session": int,
        "round": int,
        "stage": str,
        "statement": dict,
        "records": list,
        "cosigs": list,
    },
}
COMMON_FIELDS = {"v": int, "kind": str, "sender": str, "seq": int, "prev": OPT_STR, "sig": str}
STATEMENT_FIELDS = {
    "v": int,
    "outcome": str,
    "protocol": str,
    "roster": str,
    "session": int,
    "round": int,
    "survivors": list,
    "dropped": list,
    "records_digest": str,
    "aggregate": OPT_STR,
    "reason": OPT_STR,
}
COSIG_FIELDS = {"signer": str, "seq": int, "prev": OPT_STR, "statement": str, "sig": str}


def shape_ok(obj: Any, schema: Mapping[str, Any]) -> bool:
    return (
        isinstance(obj, dict)
        and set(obj) == set(schema)
        and all(isinstance(obj[k], t) and not isinstance(obj[k], bool) for k, t in schema.items())
    )
