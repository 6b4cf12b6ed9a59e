"""The plain protocol through the in-process driver, and its server checks as pure steps."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from protocols.driver import run_round
from protocols.errors import ProtocolAbort, ProtocolError, ProtocolInputError
from protocols.messages import decode, encode
from protocols.plain import BroadcastAggregate, PlainProtocol, SubmitUpdate
from protocols.registry import make_protocol
from protocols.roster import Identities
from protocols.stages import ClientInput, VectorSpec, make_setup
from protocols.transcript import TranscriptWriter, verify_transcript


def _reference(inputs: dict[str, ClientInput], ids: list[str]) -> tuple[np.ndarray, float]:
    acc = np.zeros(next(iter(inputs.values())).vector.shape[0])
    for cid in sorted(ids):
        acc += inputs[cid].weight * inputs[cid].vector.astype(np.float64)
    return acc, math.fsum(inputs[c].weight for c in ids)


def test_pinned_two_client_sum() -> None:
    ids = Identities.generate(["a", "b"])
    inputs = {
        "a": ClientInput(vector=np.array([1.0, 2.0]), weight=1.0),
        "b": ClientInput(vector=np.array([3.0, 4.0]), weight=3),
    }
    result = run_round(
        make_protocol("plain"), round_index=0, inputs=inputs, identities=ids, transcript=None
    )
    assert result.weighted_sum.tolist() == [10.0, 14.0]
    assert result.total_weight == 4.0
    assert result.weighted_sum.dtype == np.float64
    assert (result.survivors, result.dropped) == (("a", "b"), ())


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_weighted_sum_equals_numpy(identities: Identities, make_inputs, dtype: str) -> None:
    inputs = make_inputs(seed=1, length=33, dtype=dtype)
    result = run_round(
        PlainProtocol(), round_index=0, inputs=inputs, identities=identities, transcript=None
    )
    weights = np.array([inputs[c].weight for c in sorted(inputs)])
    matrix = np.stack([inputs[c].vector.astype(np.float64) for c in sorted(inputs)])
    np.testing.assert_allclose(result.weighted_sum, weights @ matrix, rtol=1e-12, atol=1e-9)
    expected, total = _reference(inputs, list(inputs))
    assert np.array_equal(result.weighted_sum, expected)  # fixed summation order: bit-exact
    assert result.total_weight == total == 10.0


def test_bytes_are_the_encoded_message_sizes(identities: Identities, make_inputs) -> None:
    inputs = make_inputs(length=5)
    result = run_round(
        PlainProtocol(), round_index=2, inputs=inputs, identities=identities, transcript=None
    )
    up = sum(
        len(
            encode(
                SubmitUpdate(
                    round_index=2, sender=c, receiver="aggregator", weight=i.weight, vector=i.vector
                )
            )
        )
        for c, i in inputs.items()
    )
    down = sum(
        len(
            encode(
                BroadcastAggregate(
                    round_index=2,
                    sender="aggregator",
                    receiver=c,
                    total_weight=result.total_weight,
                    survivors=result.survivors,
                    weighted_sum=result.weighted_sum,
                )
            )
        )
        for c in inputs
    )
    assert (result.bytes_up, result.bytes_down) == (up, down)
    assert result.stats["messages"] == 8
    assert result.stats["bytes_by_stage"] == {"SubmitUpdate": up, "BroadcastAggregate": down}


@pytest.mark.parametrize("stage", ["SubmitUpdate", "BroadcastAggregate"])
def test_dropout_before_each_stage(identities, make_inputs, tmp_path: Path, stage: str) -> None:
    inputs = make_inputs(seed=2)
    with TranscriptWriter.open(
        tmp_path / "t.jsonl", identities=identities, protocol=PlainProtocol()
    ) as tw:
        result = run_round(
            PlainProtocol(),
            round_index=0,
            inputs=inputs,
            identities=identities,
            transcript=tw,
            dropouts={"c1": stage},
        )
    assert result.survivors == ("c0", "c2", "c3") and result.dropped == ("c1",)
    expected, total = _reference(inputs, ["c0", "c2", "c3"])
    assert np.array_equal(result.weighted_sum, expected) and result.total_weight == total
    assert stage in result.stats["drop_reasons"]["c1"]
    assert verify_transcript(tmp_path / "t.jsonl", identities.roster()).ok


def test_dropouts_at_both_stages_at_once(identities, make_inputs) -> None:
    inputs = make_inputs(seed=3)
    result = run_round(
        PlainProtocol(),
        round_index=0,
        inputs=inputs,
        identities=identities,
        transcript=None,
        dropouts={"c0": "SubmitUpdate", "c3": "BroadcastAggregate"},
    )
    assert result.survivors == ("c1", "c2")
    assert np.array_equal(result.weighted_sum, _reference(inputs, ["c1", "c2"])[0])


@pytest.mark.parametrize("stage", ["SubmitUpdate", "BroadcastAggregate"])
def test_abort_when_all_drop(identities, make_inputs, tmp_path: Path, stage: str) -> None:
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=identities, protocol=PlainProtocol()) as tw:
        with pytest.raises(ProtocolAbort, match="below the threshold of 1"):
            run_round(
                PlainProtocol(),
                round_index=0,
                inputs=make_inputs(),
                identities=identities,
                transcript=tw,
                dropouts=dict.fromkeys(identities.client_ids, stage),
            )
    report = verify_transcript(path, identities.roster())
    assert report.ok and (report.rounds, report.aborted_rounds) == (0, 1)


def test_abort_below_min_survivors(identities, make_inputs) -> None:
    with pytest.raises(ProtocolAbort, match="2 of 4 clients"):
        run_round(
            PlainProtocol(min_survivors=3),
            round_index=0,
            inputs=make_inputs(),
            identities=identities,
            transcript=None,
            dropouts={"c0": "SubmitUpdate", "c1": "SubmitUpdate"},
        )


def test_wrong_length_or_dtype_drops_only_that_sender(identities, make_inputs) -> None:
    inputs = make_inputs(length=8)
    inputs["c1"] = ClientInput(vector=np.zeros(9), weight=1.0)
    inputs["c2"] = ClientInput(vector=np.zeros(8, dtype=np.float32), weight=1.0)
    result = run_round(
        PlainProtocol(),
        round_index=0,
        inputs=inputs,
        identities=identities,
        transcript=None,
        vector_spec=VectorSpec(length=8, dtype="float64"),
    )
    assert result.survivors == ("c0", "c3")
    assert result.stats["drop_reasons"] == {
        "c1": "vector is not 8 x float64",
        "c2": "vector is not 8 x float64",
    }
    assert np.array_equal(result.weighted_sum, _reference(inputs, ["c0", "c3"])[0])
    with pytest.raises(ProtocolInputError, match="vector_spec"):
        run_round(
            PlainProtocol(), round_index=0, inputs=inputs, identities=identities, transcript=None
        )


def _sender_of(data: bytes) -> str:
    return decode(data).sender


def test_corrupted_upload_in_transit_drops_its_sender(identities, make_inputs, tmp_path) -> None:
    def tap(stage: str, data: bytes) -> bytes:
        if stage == "SubmitUpdate" and _sender_of(data) == "c1":
            return data[:-1]
        return data

    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=identities, protocol=PlainProtocol()) as tw:
        result = run_round(
            PlainProtocol(),
            round_index=0,
            inputs=make_inputs(),
            identities=identities,
            transcript=tw,
            tap=tap,
        )
    assert result.survivors == ("c0", "c2", "c3")
    assert result.stats["drop_reasons"] == {"c1": "undecodable message in SubmitUpdate"}
    assert verify_transcript(path, identities.roster()).ok


def test_impersonation_in_transit_drops_the_real_sender(identities, make_inputs) -> None:
    inputs = make_inputs()

    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if stage == "SubmitUpdate" and msg.sender == "c1":
            return encode(dataclasses.replace(msg, sender="c2", vector=np.full(12, 1e6)))
        return data

    result = run_round(
        PlainProtocol(),
        round_index=0,
        inputs=inputs,
        identities=identities,
        transcript=None,
        tap=tap,
    )
    assert result.survivors == ("c0", "c2", "c3")
    assert result.stats["drop_reasons"] == {"c1": "message claims to come from c2"}
    assert np.array_equal(result.weighted_sum, _reference(inputs, ["c0", "c2", "c3"])[0])


def test_tampered_aggregate_makes_a_client_refuse_to_cosign(
    identities, make_inputs, tmp_path
) -> None:
    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if stage == "BroadcastAggregate" and msg.receiver == "c0":
            return encode(dataclasses.replace(msg, weighted_sum=msg.weighted_sum + 1.0))
        return data

    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=identities, protocol=PlainProtocol()) as tw:
        with pytest.raises(ProtocolAbort, match="c0: the statement names an aggregate"):
            run_round(
                PlainProtocol(),
                round_index=0,
                inputs=make_inputs(),
                identities=identities,
                transcript=tw,
                tap=tap,
            )
    report = verify_transcript(path, identities.roster())
    assert report.ok and report.aborted_rounds == 1


# -- the server's checks as pure steps ------------------------------------------------


def _started(protocol: PlainProtocol, n: int = 3):
    setup = make_setup(
        protocol,
        round_index=5,
        aggregator_id="aggregator",
        participants=[f"c{i}" for i in range(n)],
        vector=VectorSpec(length=2, dtype="float64"),
    )
    return setup, protocol.server_start(setup=setup, random_bytes=bytes)


def _upload(sender: str, *, round_index: int = 5, receiver: str = "aggregator", vector=None):
    vector = np.ones(2) if vector is None else vector
    return SubmitUpdate(
        round_index=round_index, sender=sender, receiver=receiver, weight=1.0, vector=vector
    )


def test_server_drops_out_of_stage_duplicate_misaddressed_and_bad_content() -> None:
    protocol = PlainProtocol()
    setup, state = _started(protocol, n=6)
    out_of_stage = BroadcastAggregate(
        round_index=5,
        sender="c1",
        receiver="aggregator",
        total_weight=1.0,
        survivors=(),
        weighted_sum=np.ones(2),
    )
    inbound = [
        _upload("c0"),
        out_of_stage,
        _upload("c2"),
        _upload("c2"),
        _upload("c3", round_index=4),
        _upload("c4", receiver="c0"),
        _upload("c5", vector=np.array([1.0, np.nan])),
        _upload("mallory"),
    ]
    state, out = protocol.server_step("SubmitUpdate", state, inbound)
    assert out == () and state.active == ("c0",)
    reasons = dict(state.dropped)
    assert reasons["c1"] == "plain.BroadcastAggregate not expected in stage SubmitUpdate"
    assert reasons["c2"] == "more than one message in stage SubmitUpdate"
    assert reasons["c3"] == "message for round 4 in round 5"
    assert reasons["c4"] == "message addressed to c0"
    assert reasons["c5"] == "vector has non-finite values"
    assert state.ignored == (("mallory", "unknown sender in SubmitUpdate"),)
    state, out = protocol.server_step("BroadcastAggregate", state, [_upload("c0")])
    assert state.aborted is not None and out == ()  # c0 spoke out of stage: no one is left
    with pytest.raises(ProtocolAbort):
        protocol.server_result(state)


def test_server_steps_must_follow_the_stage_order() -> None:
    protocol = PlainProtocol()
    _, state = _started(protocol)
    with pytest.raises(ProtocolError, match="next stage is 'SubmitUpdate'"):
        protocol.server_step("BroadcastAggregate", state, [])
    state, _ = protocol.server_step("SubmitUpdate", state, [_upload(c) for c in ("c0", "c1", "c2")])
    state, out = protocol.server_step("BroadcastAggregate", state, [])
    assert [m.receiver for m in out] == ["c0", "c1", "c2"]
    assert protocol.server_result(state).weighted_sum.tolist() == [3.0, 3.0]
    with pytest.raises(ProtocolError, match="round close"):
        protocol.server_step("SubmitUpdate", state, [])


def test_client_refuses_a_misaddressed_aggregate() -> None:
    protocol = PlainProtocol()
    setup, _ = _started(protocol)
    client = protocol.client_start(
        setup=setup,
        client_id="c0",
        client_input=ClientInput(vector=np.ones(2), weight=1.0),
        random_bytes=bytes,
    )
    client, (sent,) = protocol.client_step("SubmitUpdate", client, [])
    assert sent.sender == "c0" and sent.round_index == 5
    wrong = BroadcastAggregate(
        round_index=5,
        sender="aggregator",
        receiver="c1",
        total_weight=1.0,
        survivors=("c0",),
        weighted_sum=np.ones(2),
    )
    with pytest.raises(ProtocolAbort, match="unexpected message"):
        protocol.client_step("BroadcastAggregate", client, [wrong])


def test_plain_is_labelled_insecure() -> None:
    protocol = make_protocol("plain", min_survivors=2)
    assert protocol.secure is False and "sees every" in protocol.guarantee
    assert protocol.params == {"min_survivors": 2} and protocol.threshold(10) == 2
    assert [s.name for s in protocol.stages] == ["SubmitUpdate", "BroadcastAggregate"]


@pytest.mark.parametrize(
    ("name", "params"), [("nope", {}), ("plain", {"bogus": 1}), ("plain", {"min_survivors": 0})]
)
def test_make_protocol_refuses_bad_names_and_params(name: str, params: dict) -> None:
    with pytest.raises(ProtocolInputError):
        make_protocol(name, **params)


@pytest.mark.parametrize(
    ("vector", "weight"),
    [
        (np.array([1.0, np.inf]), 1.0),
        (np.zeros((2, 2)), 1.0),
        (np.zeros(2, dtype=np.float16), 1.0),
        (np.zeros(2, dtype=np.int32), 1.0),
        (np.zeros(2), -1.0),
        (np.zeros(2), float("nan")),
        (np.zeros(2), True),
    ],
)
def test_client_input_is_validated(vector: np.ndarray, weight: float) -> None:
    with pytest.raises(ProtocolInputError):
        ClientInput(vector=vector, weight=weight)


def test_run_round_refuses_bad_arguments(identities, make_inputs, tmp_path) -> None:
    inputs = make_inputs()
    with pytest.raises(ProtocolInputError, match="dropout"):
        run_round(
            PlainProtocol(),
            round_index=0,
            inputs=inputs,
            identities=identities,
            transcript=None,
            dropouts={"c0": "Unmasking"},
        )
    stranger = {"zed": inputs["c0"]}
    with pytest.raises(ProtocolInputError, match="identity"):
        run_round(
            PlainProtocol(), round_index=0, inputs=stranger, identities=identities, transcript=None
        )
    other = Identities.generate(identities.client_ids)
    with TranscriptWriter.open(
        tmp_path / "t.jsonl", identities=other, protocol=PlainProtocol()
    ) as tw:
        with pytest.raises(ProtocolInputError, match="roster"):
            run_round(
                PlainProtocol(), round_index=0, inputs=inputs, identities=identities, transcript=tw
            )
