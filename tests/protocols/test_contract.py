"""One suite for every aggregation protocol: a new protocol joins by adding its name
to `protocols.registry`. Float results are compared with a tolerance so that
quantizing and CKKS protocols can pass; integer inputs must sum exactly.

Every test runs its rounds through the `rounds` fixture: here the in-process
transport (`run_round`); tests/flower/test_contract_remote.py runs the same tests
over the remote transport, against client nodes behind a Flower-serialized wire."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from protocols.driver import RoundResult, run_round
from protocols.errors import ProtocolAbort
from protocols.messages import decode, encode, message_class
from protocols.registry import make_protocol, protocol_names
from protocols.roster import Identities
from protocols.stages import AggregationProtocol, ClientInput
from protocols.transcript import TranscriptWriter, verify_transcript

FLOAT_RTOL = 1e-6


class InProcessRounds:
    """Rounds over the in-process transport, with its dropout plan and tap."""

    def __init__(self, identities: Identities) -> None:
        self.identities = identities

    def open(self, path: Path, protocol: AggregationProtocol) -> TranscriptWriter:
        return TranscriptWriter.open(path, identities=self.identities, protocol=protocol)

    def run(self, protocol: AggregationProtocol, **kwargs) -> RoundResult:
        return run_round(protocol, identities=self.identities, **kwargs)

    def dropped_at(self, protocol: AggregationProtocol, stage: str) -> int:
        """The stage index before which the aggregator drops a client gone before
        `stage`: that stage itself, as the dropout plan says so in advance."""
        return [s.name for s in protocol.stages].index(stage)


@pytest.fixture
def rounds(identities: Identities) -> InProcessRounds:
    return InProcessRounds(identities)


@pytest.fixture(params=protocol_names())
def protocol(request: pytest.FixtureRequest) -> AggregationProtocol:
    return make_protocol(request.param)


def _expected(inputs: dict[str, ClientInput], ids) -> tuple[np.ndarray, float]:
    ids = sorted(ids)
    weights = np.array([inputs[c].weight for c in ids])
    matrix = np.stack([inputs[c].vector.astype(np.float64) for c in ids])
    return weights @ matrix, math.fsum(weights)


def _assert_sum(result, inputs, ids) -> None:
    expected, total = _expected(inputs, ids)
    scale = float(np.abs(expected).max(initial=1.0))
    np.testing.assert_allclose(result.weighted_sum, expected, rtol=0, atol=FLOAT_RTOL * scale)
    assert result.weighted_sum.dtype == np.float64
    assert result.total_weight == pytest.approx(total, rel=1e-12)


def _deterministic_bytes(seed: int):
    state = {"counter": 0}

    def random_bytes(n: int) -> bytes:
        out = b""
        while len(out) < n:
            block = f"{seed}:{state['counter']}".encode()
            out += hashlib.sha256(block).digest()
            state["counter"] += 1
        return out[:n]

    return random_bytes


def test_metadata(protocol: AggregationProtocol) -> None:
    assert isinstance(protocol.secure, bool) and protocol.guarantee.strip()
    names = [s.name for s in protocol.stages]
    assert len(set(names)) == len(names) and "RoundClose" not in names
    assert any(s.sender == "client" for s in protocol.stages)
    for spec in protocol.stages:
        assert spec.sender in ("client", "server") and spec.message_types
        for type_name in spec.message_types:
            assert message_class(type_name).STAGE == spec.name
    json.dumps(protocol.params)  # the transcript header records them
    assert make_protocol(protocol.name, **protocol.params).params == protocol.params
    assert 1 <= protocol.threshold(5) <= 5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_weighted_sum(protocol, rounds, make_inputs, dtype: str) -> None:
    inputs = make_inputs(seed=11, length=50, dtype=dtype)
    result = rounds.run(protocol, round_index=0, inputs=inputs, transcript=None)
    _assert_sum(result, inputs, inputs)
    assert result.survivors == tuple(sorted(inputs)) and result.dropped == ()
    assert result.bytes_up > 0 and result.bytes_down >= 0


def test_integer_inputs_sum_exactly(protocol, rounds, identities: Identities) -> None:
    rng = np.random.default_rng(5)
    inputs = {
        c: ClientInput(vector=rng.integers(-(2**20), 2**20, size=40), weight=1.0)
        for c in identities.client_ids
    }
    result = rounds.run(protocol, round_index=0, inputs=inputs, transcript=None)
    expected = sum(inputs[c].vector for c in inputs)
    assert np.array_equal(result.weighted_sum, expected.astype(np.float64))


STAGES = [(name, s.name) for name in protocol_names() for s in make_protocol(name).stages]


@pytest.mark.parametrize(("name", "stage"), STAGES)
def test_dropout_before_each_stage(
    name: str, stage: str, rounds, identities: Identities, make_inputs, tmp_path: Path
) -> None:
    protocol = make_protocol(name)
    inputs = make_inputs(seed=len(stage))
    path = tmp_path / "transcript.jsonl"
    with rounds.open(path, protocol) as tw:
        result = rounds.run(
            protocol,
            round_index=0,
            inputs=inputs,
            transcript=tw,
            dropouts={"c2": stage},
        )
    assert "c2" in result.dropped and "c2" not in result.survivors
    assert set(result.survivors) | set(result.dropped) == set(inputs)
    # A client that leaves once the sum is fixed stays in it; no one else is added.
    assert set(result.survivors) <= set(result.contributors) <= set(inputs)
    first_server_stage = next(s.name for s in protocol.stages if s.sender == "server")
    if rounds.dropped_at(protocol, stage) <= [
        s.name for s in protocol.stages
    ].index(first_server_stage):
        assert "c2" not in result.contributors
    _assert_sum(result, inputs, result.contributors)
    assert verify_transcript(path, identities.roster()).ok


def test_abort_when_all_drop(
    protocol, rounds, identities: Identities, make_inputs, tmp_path: Path
) -> None:
    path = tmp_path / "transcript.jsonl"
    first = protocol.stages[0].name
    with rounds.open(path, protocol) as tw:
        with pytest.raises(ProtocolAbort):
            rounds.run(
                protocol,
                round_index=0,
                inputs=make_inputs(),
                transcript=tw,
                dropouts=dict.fromkeys(identities.client_ids, first),
            )
    report = verify_transcript(path, identities.roster())
    assert report.ok and report.aborted_rounds == 1


def test_messages_round_trip_and_rounds_are_deterministic(
    protocol, rounds, identities: Identities, make_inputs, tmp_path: Path
) -> None:
    """With injected randomness a round is a pure function of its inputs; every
    message on the wire decodes and re-encodes to the same bytes."""
    seen: list[bytes] = []

    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        assert msg.STAGE == stage and encode(msg) == data
        seen.append(data)
        return data

    digests = []
    for attempt in range(2):
        path = tmp_path / f"t{attempt}.jsonl"
        with rounds.open(path, protocol) as tw:
            rounds.run(
                protocol,
                round_index=0,
                inputs=make_inputs(seed=3),
                transcript=tw,
                random_bytes=_deterministic_bytes(7),
                tap=tap,
            )
        records = [json.loads(line) for line in path.read_text().splitlines()]
        digests.append([r["payload_sha256"] for r in records if r["kind"] == "message"])
    assert seen and digests[0] == digests[1]


def test_a_message_corrupted_in_transit_drops_only_its_sender(
    protocol, rounds, identities: Identities, make_inputs, tmp_path: Path
) -> None:
    first = protocol.stages[0]
    assert first.sender == "client", "the contract suite assumes clients speak first"

    def tap(stage: str, data: bytes) -> bytes:
        if stage == first.name and decode(data).sender == "c1":
            return data[: len(data) // 2]
        return data

    inputs = make_inputs(seed=9)
    path = tmp_path / "transcript.jsonl"
    with rounds.open(path, protocol) as tw:
        result = rounds.run(protocol, round_index=0, inputs=inputs, transcript=tw, tap=tap)
    assert result.dropped == ("c1",)
    _assert_sum(result, inputs, result.survivors)
    assert verify_transcript(path, identities.roster()).ok


def test_check_against_plain_holds_and_catches_a_shift(protocol, rounds, make_inputs) -> None:
    import dataclasses

    from protocols.driver import check_against_plain

    inputs = make_inputs(seed=21)
    result = rounds.run(protocol, round_index=0, inputs=inputs, transcript=None)
    check = check_against_plain(protocol, inputs, result)
    assert check["ok"] and check["max_abs_error"] <= check["tolerance"]
    shifted = result.weighted_sum.copy()
    shifted[3] += 10 * check["tolerance"] + 1e-3
    assert not check_against_plain(
        protocol, inputs, dataclasses.replace(result, weighted_sum=shifted)
    )["ok"]


def test_a_vector_of_the_wrong_length_drops_only_its_sender(
    protocol, rounds, make_inputs
) -> None:
    """The aggregator cannot range-check a masked or encrypted vector, but it can
    check its length: a client sending the wrong one leaves the round."""
    from protocols.stages import VectorSpec

    inputs = make_inputs(seed=5, length=8)
    inputs["c3"] = ClientInput(vector=np.ones(12), weight=4.0)
    result = rounds.run(
        protocol, round_index=0, inputs=inputs, transcript=None,
        vector_spec=VectorSpec(length=8, dtype="float64"),
    )
    assert "c3" in result.dropped and "c3" not in result.contributors
    _assert_sum(result, inputs, result.contributors)
