"""The `ckks` protocol through the driver: its rules (the aggregator holds no key and
never sees the seed, only decryptors receive ciphertexts and only those of the signed
list, decryptions come back only flooded) and its dropout semantics. The attacks of
an active aggregator are in test_ckks_adversary.py.

All but the first test use a small context (N=4096, 60-bit data prime, scale 2^36)
with weak flooding (flood_bits 0 or 10): it runs the same stages and code paths; the
default context's precision and flooding are checked in the first test only."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from protocols.ckks import CkksContext, CkksKeyError, CkksProtocol
from protocols.ckks.context import KEY_SEED_BYTES
from protocols.ckks.messages import (
    KeyDirectory,
    RequestDecryption,
    ReturnDecryption,
    SubmitCiphertext,
    unpack,
)
from protocols.driver import run_round
from protocols.errors import ProtocolAbort
from protocols.messages import decode, encode
from protocols.registry import make_protocol
from protocols.roster import Identities
from protocols.stages import ClientInput
from protocols.transcript import TranscriptWriter, verify_transcript

SMALL = {"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": [60, 49], "scale_bits": 36,
         "flood_bits": 0}


def _expected(inputs, ids) -> np.ndarray:
    return sum(inputs[c].weight * inputs[c].vector.astype(np.float64) for c in sorted(ids))


class Spy(CkksProtocol):
    """Records every state the server and the clients pass through."""

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.server_states: list = []
        self.client_states: list = []

    def server_step(self, stage, state, inbound):
        state, out = super().server_step(stage, state, inbound)
        self.server_states.append(state)
        return state, out

    def client_step(self, stage, state, inbound):
        state, out = super().client_step(stage, state, inbound)
        self.client_states.append(state)
        return state, out


def test_default_context_round(identities: Identities, make_inputs) -> None:
    """The one test on the default parameters: N=8192, 218-bit modulus, scale 2^100."""
    protocol = make_protocol("ckks")
    inputs = make_inputs(seed=21, length=8192 + 5, dtype="float32")  # two ciphertexts each
    result = run_round(protocol, round_index=0, inputs=inputs, identities=identities,
                       transcript=None)
    expected = _expected(inputs, inputs)
    error = float(np.abs(result.weighted_sum - expected).max())
    tolerance = protocol.aggregate_tolerance(max_abs=float(np.abs(expected).max()), clients=4)
    assert 0 < error <= tolerance < 1e-9
    assert protocol._public.has_secret_key is False
    with pytest.raises(CkksKeyError):
        protocol._public.decrypt([b""], length=1)
    # each client sends two seed-compressed ciphertexts: c0 of 3 x 60-bit primes, N=8192
    per_client = result.stats["bytes_by_stage"]["SubmitCiphertext"] / 4
    assert 2 * 3 * 8192 * 8 < per_client < 2 * 3 * 8192 * 8 * 1.01


def test_the_aggregator_never_holds_key_material(identities, make_inputs) -> None:
    protocol = Spy(**SMALL).bind(identities)
    wire: list[bytes] = []
    run_round(protocol, round_index=0, inputs=make_inputs(seed=3), identities=identities,
              transcript=None, tap=lambda stage, data: wire.append(data) or data)
    seeds = {s.data.seed for s in protocol.client_states if s.data.seed is not None}
    assert len(seeds) == 4 and all(len(s) == KEY_SEED_BYTES for s in seeds)
    assert not any(seed in data for seed in seeds for data in wire)  # sealed on the wire

    def walk(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                yield from walk(getattr(value, f.name))
        elif isinstance(value, tuple | list):
            for item in value:
                yield from walk(item)
        else:
            yield value

    for state in protocol.server_states:
        for value in walk(state):
            assert not (isinstance(value, CkksContext) and value.has_secret_key)
            assert not (isinstance(value, bytes) and any(seed in value for seed in seeds))


def test_only_decryptors_receive_ciphertexts_and_only_the_listed_ones(identities,
                                                                      make_inputs) -> None:
    submitted: dict[str, tuple[bytes, ...]] = {}
    requests: list[RequestDecryption] = []

    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, SubmitCiphertext):
            submitted[msg.sender] = unpack(msg.sizes, msg.data)
        elif isinstance(msg, RequestDecryption):
            requests.append(msg)
        return data

    protocol = CkksProtocol(**SMALL).bind(identities)
    run_round(protocol, round_index=0, inputs=make_inputs(), identities=identities,
              transcript=None, tap=tap)
    holders = [m for m in requests if m.decrypt]
    assert [m.receiver for m in holders] == ["c0", "c1"]  # the first `decryptors` listed
    assert all(m.data.shape == (0,) and not m.signers for m in requests if not m.decrypt)
    for m in holders:
        assert m.contributors == ("c0", "c1", "c2", "c3") and m.signers == m.contributors
        # every listed client's own ciphertexts, as submitted, in list order: no sum
        assert unpack(m.sizes, m.data) == sum((submitted[c] for c in m.contributors), ())


def test_decryptions_come_back_noise_flooded(identities) -> None:
    params = {**SMALL, "flood_bits": 10}
    protocol = Spy(**params).bind(identities)
    length = 4096
    inputs = {c: ClientInput(vector=np.full(length, float(i)), weight=1.0)
              for i, c in enumerate(identities.client_ids)}
    returned: dict[str, np.ndarray] = {}

    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, ReturnDecryption) and msg.values.size:
            returned[msg.sender] = msg.values
        return data

    result = run_round(protocol, round_index=0, inputs=inputs, identities=identities,
                       transcript=None, tap=tap)
    sigma = protocol.ckks.flood_sigma(4)
    # 2^lambda N sqrt(k/2) B / (2 Delta)
    assert sigma == pytest.approx(2.0**10 * 4096 * 84 / 2.0**37)
    exact = 6.0  # 0 + 1 + 2 + 3, known exactly
    for values in returned.values():
        assert (values - exact).std() == pytest.approx(sigma, rel=0.05)
    a, b = returned.values()
    assert not np.array_equal(a, b)  # independent noise per decryptor
    assert np.array_equal(result.weighted_sum, (a + b) / 2)  # the aggregate is their mean
    assert (result.weighted_sum - exact).std() == pytest.approx(sigma / math.sqrt(2), rel=0.05)


def test_a_contributor_leaving_after_the_sum_stays_in_it(identities, make_inputs,
                                                         tmp_path: Path) -> None:
    protocol = CkksProtocol(**SMALL).bind(identities)
    inputs = make_inputs(seed=8)
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=identities, protocol=protocol) as tw:
        result = run_round(protocol, round_index=0, inputs=inputs, identities=identities,
                           transcript=tw, dropouts={"c3": "ReturnDecryption"})
    assert result.dropped == ("c3",) and "in the aggregate" in result.stats["drop_reasons"]["c3"]
    expected = _expected(inputs, inputs)  # c3's update is in the sum it helped to fix
    tol = protocol.aggregate_tolerance(max_abs=float(np.abs(expected).max()), clients=4)
    np.testing.assert_allclose(result.weighted_sum, expected, rtol=0, atol=tol)
    assert result.total_weight == 10.0
    assert verify_transcript(path, identities.roster()).ok


@pytest.mark.parametrize(
    ("stage", "keyholder", "in_sum"),
    [("ShareSeed", "c1", False), ("DeliverSeed", "c1", False), ("SubmitCiphertext", "c0", False),
     ("ProposeContributors", "c0", False), ("SignContributors", "c0", True),
     ("RequestDecryption", "c0", True)],
)
def test_the_keyholder_may_drop_out(identities, make_inputs, stage: str, keyholder: str,
                                    in_sum: bool) -> None:
    """Also the first decryptor: c0 leaves; once the list naming it is fixed (the
    proposal), its update stays in the sum and c1 alone decrypts."""
    protocol = Spy(**SMALL).bind(identities)
    inputs = make_inputs(seed=5)
    result = run_round(protocol, round_index=0, inputs=inputs, identities=identities,
                       transcript=None, dropouts={"c0": stage})
    assert result.dropped == ("c0",)
    assert protocol.server_states[-1].data.keyholder == keyholder
    assert ("c0" in result.contributors) == in_sum
    expected = _expected(inputs, result.contributors)
    tol = protocol.aggregate_tolerance(max_abs=float(np.abs(expected).max()), clients=4)
    np.testing.assert_allclose(result.weighted_sum, expected, rtol=0, atol=tol)


def test_a_lone_participant_decrypts_only_its_own_ciphertext() -> None:
    ids = Identities.generate(["a"])
    inputs = {"a": ClientInput(vector=np.array([1.0, 2.0, 3.0]), weight=2.0)}
    result = run_round(CkksProtocol(min_survivors=1, **SMALL).bind(ids), round_index=0,
                       inputs=inputs, identities=ids, transcript=None)
    np.testing.assert_allclose(result.weighted_sum, [2.0, 4.0, 6.0], atol=1e-4)


def test_without_a_majority_left_to_sign_the_round_aborts() -> None:
    """min_survivors 1 allows a sum of one client, but only over a list a majority of
    the participants signed: one of two left is not a majority."""
    ids = Identities.generate(["a", "b"])
    protocol = CkksProtocol(min_survivors=1, **SMALL).bind(ids)
    assert protocol.threshold(2) == 2 and protocol.threshold(5) == 3
    inputs = {c: ClientInput(vector=np.array([1.0, 2.0, 3.0]), weight=2.0) for c in ("a", "b")}
    with pytest.raises(ProtocolAbort, match="below the threshold of 2"):
        run_round(protocol, round_index=0, inputs=inputs, identities=ids, transcript=None,
                  dropouts={"b": "SubmitCiphertext"})


def _tapping(kind, change):
    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        return encode(change(msg)) if isinstance(msg, kind) and msg.receiver == "c0" else data
    return tap


def test_a_client_notices_its_own_key_replaced_in_the_directory(identities, make_inputs) -> None:
    def swap(m: KeyDirectory) -> KeyDirectory:
        return dataclasses.replace(m, public_keys=bytes(32) + m.public_keys[32:])

    with pytest.raises(ProtocolAbort, match="own key"):
        run_round(CkksProtocol(**SMALL).bind(identities), round_index=0, inputs=make_inputs(),
                  identities=identities,
                  transcript=None, tap=_tapping(KeyDirectory, swap))


def test_an_unloadable_ciphertext_drops_only_its_sender(identities, make_inputs) -> None:
    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, SubmitCiphertext) and msg.sender == "c2":
            return encode(dataclasses.replace(msg, data=np.zeros_like(msg.data)))
        return data

    inputs = make_inputs(seed=6)
    protocol = CkksProtocol(**SMALL).bind(identities)
    result = run_round(protocol, round_index=0, inputs=inputs, identities=identities,
                       transcript=None, tap=tap)
    assert result.dropped == ("c2",)
    expected = _expected(inputs, ["c0", "c1", "c3"])
    tol = protocol.aggregate_tolerance(max_abs=float(np.abs(expected).max()), clients=4)
    np.testing.assert_allclose(result.weighted_sum, expected, rtol=0, atol=tol)


def test_integer_inputs_come_back_exact(identities) -> None:
    rng = np.random.default_rng(1)
    inputs = {c: ClientInput(vector=rng.integers(-1000, 1000, size=50), weight=float(i + 1))
              for i, c in enumerate(identities.client_ids)}
    result = run_round(CkksProtocol(**SMALL).bind(identities), round_index=0, inputs=inputs,
                       identities=identities,
                       transcript=None)
    assert np.array_equal(result.weighted_sum, _expected(inputs, inputs))


def test_two_rounds_each_with_a_fresh_key_verify(identities, make_inputs, tmp_path: Path) -> None:
    protocol = Spy(**SMALL).bind(identities)
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=identities, protocol=protocol) as tw:
        for r in range(2):
            run_round(protocol, round_index=r, inputs=make_inputs(seed=r), identities=identities,
                      transcript=tw)
    assert verify_transcript(path, identities.roster()).ok
    keyholder_seeds = {s.setup.round_index: s.data.seed for s in protocol.client_states
                       if s.client_id == "c0" and s.data.seed is not None}
    assert keyholder_seeds[0] != keyholder_seeds[1]


def test_params_round_trip_from_flags_and_refuse_bad_values() -> None:
    p = make_protocol("ckks", coeff_mod_bit_sizes="60,49", poly_modulus_degree=4096, scale_bits=36)
    assert p.params["coeff_mod_bit_sizes"] == [60, 49]
    assert make_protocol("ckks", **p.params).params == p.params
    for bad in ({"min_survivors": 0}, {"scale_bits": "high"}, {"coeff_mod_bit_sizes": [60] * 5}):
        with pytest.raises(ValueError):
            make_protocol("ckks", **bad)
    with pytest.raises(ValueError, match="encodes values below"):
        run_round(CkksProtocol(**SMALL), round_index=0,
                  inputs={c: ClientInput(vector=np.array([1e6]), weight=1.0) for c in ("c0", "c1")},
                  identities=Identities.generate(["c0", "c1"]), transcript=None)
