"""The `tee` protocol through the driver: equal to plain bit for bit, and every bad
quote the host could serve aborts the round with the error of its check."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from protocols.driver import run_round
from protocols.errors import ProtocolAbort
from protocols.messages import decode, encode
from protocols.plain import PlainProtocol
from protocols.registry import make_protocol
from protocols.stages import ClientInput, VectorSpec, make_setup
from protocols.tee import (
    DebugEnclaveError,
    KeyBindingError,
    MeasurementError,
    ReplayedNonceError,
    SimulatedQuoteError,
    StaleSvnError,
    TeeProtocol,
    UnsealError,
)
from protocols.tee.enclave import SimulatedEnclave, encode_update
from protocols.tee.messages import Attest, SubmitSealed
from protocols.transcript import TranscriptWriter, verify_transcript


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_aggregate_equals_plain_bit_for_bit(identities, make_inputs, dtype: str) -> None:
    inputs = make_inputs(seed=4, length=257, dtype=dtype)
    tee = run_round(TeeProtocol(), round_index=0, inputs=inputs, identities=identities, transcript=None)
    plain = run_round(PlainProtocol(), round_index=0, inputs=inputs, identities=identities,
                      transcript=None)
    assert np.array_equal(tee.weighted_sum, plain.weighted_sum)
    assert tee.total_weight == plain.total_weight == 10.0
    assert tee.survivors == plain.survivors


def test_two_rounds_share_one_transcript_that_verifies(identities, make_inputs, tmp_path: Path) -> None:
    protocol = make_protocol("tee")
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=identities, protocol=protocol) as tw:
        for r in range(2):
            run_round(protocol, round_index=r, inputs=make_inputs(seed=r), identities=identities,
                      transcript=tw)
    report = verify_transcript(path, identities.roster())
    assert report.ok and report.rounds == 2


def _aborts(protocol, identities, make_inputs, tmp_path, error, tap=None) -> None:
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=identities, protocol=protocol) as tw:
        with pytest.raises(error):
            run_round(protocol, round_index=0, inputs=make_inputs(), identities=identities,
                      transcript=tw, tap=tap)
    report = verify_transcript(path, identities.roster())
    assert report.ok and report.aborted_rounds == 1 and report.rounds == 0
    # no client sent an update: the abort came before SubmitSealed
    assert '"stage":"SubmitSealed"' not in path.read_text()


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"allow": ["ab" * 48]}, MeasurementError),
        ({"debug": True}, DebugEnclaveError),
        ({"svn": 1, "min_svn": 2}, StaleSvnError),
        ({"production": True}, SimulatedQuoteError),
    ],
)
def test_a_refused_quote_aborts_the_round(identities, make_inputs, tmp_path, params, error) -> None:
    _aborts(make_protocol("tee", **params), identities, make_inputs, tmp_path, error)


def test_host_substituting_the_enclave_key_is_caught(identities, make_inputs, tmp_path) -> None:
    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, Attest):  # the host offers a key it holds itself
            return encode(dataclasses.replace(msg, enclave_key=os.urandom(32)))
        return data

    _aborts(TeeProtocol(), identities, make_inputs, tmp_path, KeyBindingError, tap)


def test_a_quote_replayed_from_an_earlier_round_is_not_fresh(identities, make_inputs, tmp_path) -> None:
    protocol = TeeProtocol()
    old: dict[str, bytes] = {}

    def record(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, Attest):
            old[msg.receiver] = msg.quote
        return data

    run_round(protocol, round_index=0, inputs=make_inputs(), identities=identities,
              transcript=None, tap=record)

    def replay(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, Attest):
            return encode(dataclasses.replace(msg, quote=old[msg.receiver]))
        return data

    with pytest.raises(ReplayedNonceError):
        run_round(protocol, round_index=1, inputs=make_inputs(), identities=identities,
                  transcript=None, tap=replay)


def test_a_tampered_sealed_update_drops_its_sender_only(identities, make_inputs) -> None:
    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, SubmitSealed) and msg.sender == "c3":
            sealed = msg.sealed.copy()
            sealed[-1] ^= 1
            return encode(dataclasses.replace(msg, sealed=sealed))
        return data

    inputs = make_inputs(seed=2)
    result = run_round(TeeProtocol(), round_index=0, inputs=inputs, identities=identities,
                       transcript=None, tap=tap)
    assert result.dropped == ("c3",)
    assert "rejected in the enclave" in result.stats["drop_reasons"]["c3"]
    expected = sum(inputs[c].weight * inputs[c].vector for c in ("c0", "c1", "c2"))
    np.testing.assert_array_equal(result.weighted_sum, expected)


def test_host_state_holds_no_update_in_the_clear(identities) -> None:
    protocol = TeeProtocol()
    setup = make_setup(protocol, round_index=0, aggregator_id="aggregator",
                       participants=["c0", "c1"], vector=VectorSpec(length=64, dtype="float64"))
    vector = np.arange(64, dtype=np.float64) + 0.5
    enclave = protocol.enclave
    sealed = enclave.start(random_bytes=os.urandom)
    from protocols.tee.channel import agreement_key, channel_context, seal_to_enclave

    own = agreement_key(os.urandom)
    ctx = channel_context(round_index=0, client_id="c0", client_key=own.public_key,
                          enclave_key=enclave.public_key(sealed), measurement=protocol.measurement)
    blob = seal_to_enclave(own=own, enclave_key=enclave.public_key(sealed), context=ctx,
                           plaintext=encode_update(weight=2.0, vector=vector), random_bytes=os.urandom)
    state, bad = enclave.ingest(sealed, setup=setup, submissions=[("c0", own.public_key, blob)],
                                random_bytes=os.urandom)
    assert bad == {} and vector.tobytes() not in state and vector.tobytes()[:64] not in state
    with pytest.raises(ProtocolAbort, match="minimum 2"):  # the enclave's own release rule
        enclave.release(state, survivors=["c0"])


def _ingested(enclave, setup, inputs):
    """A fresh round state of `enclave` holding the sealed updates of `inputs`."""
    from protocols.tee.channel import agreement_key, channel_context, seal_to_enclave

    sealed = enclave.start(random_bytes=os.urandom)
    key, submissions = enclave.public_key(sealed), []
    for cid, inp in inputs.items():
        own = agreement_key(os.urandom)
        ctx = channel_context(round_index=setup.round_index, client_id=cid, client_key=own.public_key,
                              enclave_key=key, measurement=enclave.measurement)
        blob = seal_to_enclave(own=own, enclave_key=key, context=ctx, random_bytes=os.urandom,
                               plaintext=encode_update(weight=inp.weight, vector=inp.vector))
        submissions.append((cid, own.public_key, blob))
    state, bad = enclave.ingest(sealed, setup=setup, submissions=submissions, random_bytes=os.urandom)
    assert bad == {}
    return state


def test_one_state_releases_one_sum_and_no_other_instance_reopens_it(identities, make_inputs) -> None:
    """A host that asks for the sum over {c0, c1, c2} and then over {c0, c1} would learn
    c2's update from the difference: the enclave refuses the second set, and a restarted
    enclave (same code, same platform) cannot unseal the state to ask again."""
    protocol = TeeProtocol()
    inputs = make_inputs(seed=6)
    setup = make_setup(protocol, round_index=0, aggregator_id="aggregator",
                       participants=list(inputs), vector=VectorSpec(length=12, dtype="float64"))
    enclave = protocol.enclave
    state = _ingested(enclave, setup, inputs)
    first = enclave.release(state, survivors=["c0", "c1", "c2"])
    with pytest.raises(ProtocolAbort, match="already released"):
        enclave.release(state, survivors=["c0", "c1"])
    again = enclave.release(state, survivors=["c2", "c1", "c0"])  # the same set: the same sum
    assert np.array_equal(again.weighted_sum, first.weighted_sum)
    with pytest.raises(ProtocolAbort, match="already released"):  # nor by adding to it
        enclave.release(state, survivors=list(inputs))
    restarted = SimulatedEnclave(platform=protocol.platform, measurement=protocol.measurement,
                                 min_survivors=2)
    with pytest.raises(UnsealError):
        restarted.release(state, survivors=["c0", "c1"])
    later = dataclasses.replace(setup, round_index=1)
    with pytest.raises(ProtocolAbort, match="one state, one round"):
        enclave.ingest(state, setup=later, submissions=[], random_bytes=os.urandom)


def test_params_round_trip_and_reject_bad_values() -> None:
    p = make_protocol("tee", allow="AB" * 48 + "," + "cd" * 48, min_svn=3, svn=3)
    assert p.params["allow"] == ["ab" * 48, "cd" * 48]
    assert make_protocol("tee", **p.params).params == p.params
    for bad in ({"allow": "xyz"}, {"min_survivors": 0}, {"svn": -1}, {"debug": "yes"}):
        with pytest.raises(ValueError):
            make_protocol("tee", **bad)
    assert "SIMULATED" in TeeProtocol.guarantee


def test_input_dtype_mismatch_is_dropped_in_the_enclave(identities) -> None:
    inputs = {c: ClientInput(vector=np.ones(8, dtype=np.float64), weight=1.0) for c in ("c0", "c1", "c2")}
    inputs["c3"] = ClientInput(vector=np.ones(8, dtype=np.int64), weight=1.0)
    result = run_round(TeeProtocol(), round_index=0, inputs=inputs, identities=identities,
                       transcript=None, vector_spec=VectorSpec(length=8, dtype="float64"))
    assert result.dropped == ("c3",) and result.weighted_sum.tolist() == [3.0] * 8
