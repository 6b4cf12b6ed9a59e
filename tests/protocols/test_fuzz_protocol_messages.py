"""Fuzzing every message type of every protocol: mutated wire bytes decode to a
message in its one canonical form or are refused with `MessageDecodeError`;
nothing else escapes, nothing hangs, and no claimed length allocates.

The suite runs a sample of 500; the long run is its own command (README):

    make fuzz      # SECUREDIFF_FUZZ_EXAMPLES=100000 over this file
"""

from __future__ import annotations

import os
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.driver import run_round
from protocols.errors import MessageDecodeError
from protocols.messages import MAGIC, decode, encode
from protocols.registry import make_protocol, protocol_names
from protocols.roster import Identities
from protocols.stages import ClientInput

FUZZ_EXAMPLES = int(os.environ.get("SECUREDIFF_FUZZ_EXAMPLES", "500"))
# The slowest legal decode (a 12-value vector) takes well under a millisecond.
SLOW_DECODE_S = 0.25


def _corpus() -> list[bytes]:
    """Every message of one round of each protocol, with a late and an early dropout."""
    ids = Identities.generate(["c0", "c1", "c2", "c3", "c4"])
    rng = np.random.default_rng(0)
    seen: dict[str, bytes] = {}

    def tap(stage: str, data: bytes) -> bytes:
        seen.setdefault(decode(data).TYPE_NAME, data)
        return data

    for name in protocol_names():
        protocol = make_protocol(name).bind(ids)
        inputs = {c: ClientInput(vector=rng.normal(size=12), weight=float(i + 1))
                  for i, c in enumerate(ids.client_ids)}
        stages = [s.name for s in protocol.stages if s.sender == "client"]
        run_round(protocol, round_index=0, inputs=inputs, identities=ids, transcript=None,
                  dropouts={"c4": stages[-1]}, tap=tap)
    return [seen[k] for k in sorted(seen)]


CORPUS = _corpus()


def _decode_or_refuse(data: bytes) -> None:
    started = time.perf_counter()
    try:
        msg = decode(data)
    except MessageDecodeError:
        return
    finally:
        assert time.perf_counter() - started < SLOW_DECODE_S
    assert encode(msg) == data  # anything accepted is in its one canonical form


def test_the_corpus_covers_every_protocol() -> None:
    prefixes = {decode(raw).TYPE_NAME.split(".")[0] for raw in CORPUS}
    assert len(CORPUS) >= 20
    assert {"secagg", "ckks", "tee"} <= prefixes
    for raw in CORPUS:
        assert encode(decode(raw)) == raw


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_mutated_messages_of_every_protocol(data: st.DataObject) -> None:
    raw = bytearray(data.draw(st.sampled_from(CORPUS)))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(
            ["flip", "truncate", "insert", "overwrite", "delete", "splice", "length"]))
        i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "truncate":
            del raw[i:]
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "overwrite":
            chunk = data.draw(st.binary(min_size=1, max_size=16))
            raw[i: i + len(chunk)] = chunk
        elif op == "delete" and raw:
            del raw[i: i + data.draw(st.integers(1, 16))]
        elif op == "splice":
            other = data.draw(st.sampled_from(CORPUS))
            raw[i:] = other[data.draw(st.integers(0, len(other) - 1)):]
        elif op == "length" and len(raw) >= 20:
            # Rewrite a framing length (header: u32 at 8; payload: u64 at 12).
            if data.draw(st.booleans()):
                raw[8:12] = struct.pack("<I", data.draw(st.integers(0, 2**32 - 1)))
            else:
                raw[12:20] = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1)))
    _decode_or_refuse(bytes(raw))


@pytest.mark.parametrize("claimed", [2**20, 2**30 - 1, 2**32 - 1, 2**63])
def test_a_claimed_length_allocates_nothing(claimed: int) -> None:
    raw = CORPUS[0]
    assert raw[: len(MAGIC)] == MAGIC
    header_len = bytearray(raw)
    header_len[8:12] = struct.pack("<I", min(claimed, 2**32 - 1))
    payload_len = bytearray(raw)
    payload_len[12:20] = struct.pack("<Q", claimed)
    for forged in (header_len, payload_len):
        started = time.perf_counter()
        with pytest.raises(MessageDecodeError):
            decode(bytes(forged))
        assert time.perf_counter() - started < SLOW_DECODE_S
