"""secagg rounds: the aggregate is the included clients' sum (exactly in the ring,
within the stated bound in floats) whenever every client that needs it keeps t
surviving shareholders, and the round aborts otherwise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from protocols.driver import run_round
from protocols.errors import ProtocolAbort, ProtocolInputError
from protocols.hazmat.prg import prg_stream
from protocols.hazmat.quantize import error_bound
from protocols.messages import decode
from protocols.registry import make_protocol
from protocols.roster import Identities
from protocols.secagg import SecAggProtocol
from protocols.secagg.audit import transcript_meta
from protocols.secagg.graph import harary_graph, is_connected
from protocols.secagg.messages import Release, RouteKeys
from protocols.stages import ClientInput
from protocols.transcript import TranscriptWriter, verify_transcript

IDS = {n: Identities.generate([f"k{i:02d}" for i in range(n)]) for n in (3, 4, 6, 9, 13, 20, 30)}


class Watch:
    """A tap that keeps the routed graph and the released included list."""

    def __init__(self) -> None:
        self.graph = None
        self.included: tuple[str, ...] | None = None

    def __call__(self, stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, RouteKeys) and self.graph is None:
            meta = transcript_meta(msg)
            self.graph = harary_graph(msg.ids, degree=msg.degree,
                                      seed=bytes.fromhex(meta["graph_seed"]))
        if isinstance(msg, Release):
            self.included = tuple(msg.included)
        return data


def _stages(protocol):
    return [s.name for s in protocol.stages]


def expected_outcome(protocol: SecAggProtocol, plan: dict[str, str], ids, graph, t):
    """The included set S if the round must succeed, else None (the rules of docs/secagg.md)."""
    names = _stages(protocol)
    gone_at = {c: names.index(s) for c, s in plan.items()}

    def present(stage: str) -> set[str]:
        i = names.index(stage)
        return {c for c in ids if gone_at.get(c, len(names)) > i}

    u1 = present("AdvertiseKeys") & present("RouteKeys")
    if len(u1) < t or graph is None:
        return None
    u2 = u1 & present("ShareKeys") & present("ForwardShares")
    u3 = u2 & present("MaskedInput")  # L: every masked input that arrived
    if protocol.config.consistency_check:
        signers = u3 & present("ConsistencyRequest") & present("ConsistencySign")
        askable = signers & present("UnmaskRequest")
        quorum_ok = len(signers) >= len(u1) // 2 + 1
    else:
        askable, quorum_ok = u3 & present("UnmaskRequest"), True
    u5 = askable & present("Unmask")
    final = u5 & present("Release")
    ok = len(final) >= t and len(u3) >= t and is_connected(u3, graph) and quorum_ok
    for v in u2:
        holders = ((graph[v] & u2) | {v}) & u5
        ok = ok and len(holders) >= t
    return u3 if ok else None


def _inputs(ids, gen, dtype):
    out = {}
    for cid in ids:
        if dtype == "int64":
            vec = gen.integers(-(2**30), 2**30, size=6)
        else:
            vec = (gen.normal(size=6) * 20).astype(dtype)
        out[cid] = ClientInput(vector=vec, weight=float(gen.integers(0, 1000)))
    return out


@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_aggregate_equals_included_sum_or_the_round_aborts(data) -> None:
    n = data.draw(st.sampled_from(sorted(IDS)), label="n")
    identities = IDS[n]
    ids = identities.client_ids
    complete = data.draw(st.booleans(), label="complete") or n < 5
    degree = n - 1 if complete else data.draw(st.sampled_from(range(2, n - 1, 2)), label="k")
    lo = (degree + 1) // 2 + 1
    t = data.draw(st.integers(lo, degree), label="t")
    consistency = data.draw(st.booleans(), label="consistency")
    protocol = make_protocol("secagg", degree=degree, threshold=t, consistency_check=consistency)
    stages = _stages(protocol)
    plan = {}
    for cid in ids:
        if data.draw(st.integers(0, 3), label=f"drops {cid}") == 0:
            plan[cid] = data.draw(st.sampled_from(stages), label=f"stage {cid}")
    dtype = data.draw(st.sampled_from(["int64", "float32", "float64"]), label="dtype")
    inputs = _inputs(ids, np.random.default_rng(data.draw(st.integers(0, 2**32))), dtype)
    watch = Watch()
    try:
        result = run_round(protocol, round_index=0, inputs=inputs, identities=identities,
                           transcript=None, dropouts=plan, tap=watch)
    except ProtocolAbort:
        result = None
    expected = expected_outcome(protocol, plan, ids, watch.graph, t)
    event("aborts" if expected is None else "aggregates")
    if expected is None:
        assert result is None, f"should abort: plan {plan}"
        return
    assert result is not None, f"should succeed: plan {plan}"
    assert set(watch.included) == expected and set(result.survivors) <= expected
    weights = np.array([inputs[c].weight for c in sorted(expected)])
    assert result.total_weight == math.fsum(weights)
    vectors = np.stack([inputs[c].vector.astype(np.float64) for c in sorted(expected)])
    if dtype == "int64":  # exact in the ring (and in float64 below 2^53)
        exact = [sum(int(w) * int(v) for w, v in zip(weights, col, strict=True))
                 for col in vectors.T.astype(np.int64)]
        assert [int(x) for x in result.weighted_sum] == exact
    else:
        bound = error_bound(total_weight=result.total_weight, fixed=protocol.config.fixed,
                            integer=False)
        clipped = np.clip(vectors, -protocol.config.clip_range, protocol.config.clip_range)
        assert np.all(np.abs(result.weighted_sum - weights @ clipped) <= bound)


def test_late_droppers_stay_in_the_aggregate(tmp_path: Path) -> None:
    """A client that drops after the included set is fixed keeps its input in the sum:
    removing it would need both of its secrets (docs/secagg.md)."""
    identities = IDS[6]
    ids = identities.client_ids
    inputs = _inputs(ids, np.random.default_rng(1), "int64")
    protocol = make_protocol("secagg")
    watch = Watch()
    with TranscriptWriter.open(tmp_path / "t.jsonl", identities=identities,
                               protocol=protocol) as tw:
        result = run_round(protocol, round_index=0, inputs=inputs, identities=identities,
                           transcript=tw, dropouts={ids[0]: "Unmask", ids[1]: "MaskedInput"},
                           tap=watch)
    assert set(result.dropped) == {ids[0], ids[1]}
    assert set(watch.included) == set(ids) - {ids[1]}
    expected = sum(inputs[c].weight * inputs[c].vector for c in watch.included)
    assert np.array_equal(result.weighted_sum, expected.astype(np.float64))
    assert verify_transcript(tmp_path / "t.jsonl", identities.roster()).ok


def test_a_bound_round_signs_keys_and_passes_the_contract_checks(tmp_path: Path) -> None:
    identities = IDS[9]
    protocol = make_protocol("secagg").bind(identities)
    inputs = _inputs(identities.client_ids, np.random.default_rng(2), "float32")
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=identities, protocol=protocol,
                               store_payloads=True) as tw:
        for r in range(2):
            result = run_round(protocol, round_index=r, inputs=inputs, identities=identities,
                               transcript=tw, dropouts={"k03": "ShareKeys", "k07": "Unmask"})
    report = verify_transcript(path, identities.roster())
    assert report.ok, report.problems
    assert report.replayed_rounds == 2 and "k03" in result.dropped


def test_masked_inputs_look_uniform_and_hide_the_input() -> None:
    identities = IDS[4]
    zeros = {c: ClientInput(vector=np.zeros(4000, dtype=np.int64), weight=1.0)
             for c in identities.client_ids}
    seen = []

    def tap(stage: str, data: bytes) -> bytes:
        if stage == "MaskedInput":
            seen.append(decode(data).masked)
        return data

    protocol = make_protocol("secagg", max_weight=1.0, value_bits=24)  # a 32-bit ring
    run_round(protocol, round_index=0, inputs=zeros, identities=identities, transcript=None,
              tap=tap, random_bytes=prg_stream(b"\x03" * 32, nonce=b"uniformity"))
    for masked in seen:
        top = (np.asarray(masked[:4000]) >> 28).astype(np.int64)  # 32-bit ring: top 4 bits
        counts = np.bincount(top, minlength=16)
        assert float(((counts - 250.0) ** 2 / 250.0).sum()) < 45.0


def test_weights_that_cannot_travel_exactly_are_refused() -> None:
    identities = IDS[3]
    inputs = {c: ClientInput(vector=np.ones(3), weight=0.5) for c in identities.client_ids}
    with pytest.raises(ProtocolInputError, match="multiple of 2"):
        run_round(make_protocol("secagg"), round_index=0, inputs=inputs, identities=identities,
                  transcript=None)
    result = run_round(make_protocol("secagg", weight_frac_bits=1), round_index=0,
                       inputs=inputs, identities=identities, transcript=None)
    assert result.total_weight == 1.5


def test_the_ring_and_stats_follow_the_parameters() -> None:
    identities = IDS[6]
    protocol = make_protocol("secagg", value_bits=24, max_weight=1.0, clip_range=1.0)
    inputs = {c: ClientInput(vector=np.full(10, 2.0, np.float32), weight=1.0)
              for c in identities.client_ids}
    sizes = []

    def tap(stage: str, data: bytes) -> bytes:
        if stage == "MaskedInput":
            sizes.append(decode(data).masked.nbytes)
        return data

    result = run_round(protocol, round_index=0, inputs=inputs, identities=identities,
                       transcript=None, tap=tap)
    assert sizes == [4 * 12] * 6  # a 32-bit ring: 24 value bits + 6 clients + sign
    bound = error_bound(total_weight=6.0, fixed=protocol.config.fixed, integer=False)
    assert np.all(np.abs(result.weighted_sum - 6.0) <= bound)  # every value clipped to 1.0


def test_too_many_clients_for_the_ring_are_refused() -> None:
    with pytest.raises(ProtocolInputError, match="ring"):
        make_protocol("secagg", value_bits=48, max_weight=2.0**30)._context(
            _setup(make_protocol("secagg"), 100))


def _setup(protocol, n):
    from protocols.stages import VectorSpec, make_setup

    return make_setup(protocol, round_index=0, aggregator_id="agg",
                      participants=[f"c{i}" for i in range(n)],
                      vector=VectorSpec(length=10, dtype="float32"))
