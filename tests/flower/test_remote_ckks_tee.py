"""ckks and tee across machines without Flower's processes: the remote round driver
against client nodes that get every request as a deep copy (as over a wire), and
the ServerApp's training loop through the stand-in Grid of test_flower_training.
Each round is compared with the in-process simulation of the same inputs and the
same dropout; the Flower deployment itself is test_flower_secagg.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from protocols import (
    ProtocolAbort,
    check_against_plain,
    make_protocol,
    run_round,
    verify_transcript,
)
from protocols.driver import RoundResult
from protocols.remote import SignedRecordWriter
from protocols.stages import VectorSpec
from protocols.tee.enclave import SimulatedEnclave
from securediff.errors import ConfigError
from securediff.flower.driver import run_remote_round
from securediff.flower.inputs import seeded_vector
from securediff.flower.policy import NodePolicy
from securediff.flower.server import AggregatorSettings, run_aggregator

from . import test_flower_training as training
from . import test_remote_driver as remote

CLIENTS, LENGTH, SEED = remote.CLIENTS, remote.LENGTH, remote.SEED
deployment = training.deployment
base_world = remote.world  # the fixtures of both files, shared
# A node refuses ckks unless it assumes an honest-but-curious aggregator (the default
# is active: test_node_policy.py); these nodes assume it, so that ckks runs.
TRUSTING = NodePolicy(threat_model="honest-but-curious")


@pytest.fixture()
def world(base_world):
    for node in base_world[3].values():
        node.policy = TRUSTING
    return base_world


def _exchange(nodes, **faults):
    """test_remote_driver's exchange, with a node's exception turned into an error
    reply, as Flower turns a failing ClientApp into one."""
    def handle(node):
        def answer(request):
            try:
                return node.handle(request)
            except Exception as exc:  # noqa: BLE001
                return {"error": f"{type(exc).__name__}: {exc}"}
        return type("Node", (), {"handle": staticmethod(answer)})

    return remote._exchange({c: handle(n) for c, n in nodes.items()}, **faults)


def _rounds(protocol, world, rounds, faults=None):
    """Run `rounds` remote rounds of `protocol` (aggregator side); each result or abort."""
    identities, roster, me, nodes, path = world
    protocol = protocol.bind(me)
    writer = SignedRecordWriter.open(path, identities=me, protocol=protocol,
                                     store_payloads=True, planned_rounds=(0, rounds))
    results = []
    try:
        for r in range(rounds):
            try:
                results.append(run_remote_round(
                    protocol, round_index=r, participants=CLIENTS,
                    vector_spec=VectorSpec(LENGTH, "float32"), identities=me, transcript=writer,
                    exchange=_exchange(nodes, **(faults or {}).get(r, {}))))
            except ProtocolAbort as exc:
                results.append(exc)
    finally:
        writer.close()
    return results, verify_transcript(path, roster)


@pytest.mark.parametrize(("name", "stage", "lost"), [
    ("ckks", "ShareSeed", "client-02"),         # before the key seed is out: recovered
    ("ckks", "ReturnDecryption", "client-00"),  # a decryptor, after the sum was fixed
    ("tee", "SubmitSealed", "client-02"),       # attested, then gone before sending
])
def test_rounds_match_the_simulation_and_verify(world, name, stage, lost):
    results, report = _rounds(make_protocol(name), world, 2, {1: {"lost": (lost,), "at": stage}})
    assert report.ok, report.problems
    assert report.rounds == 2 and report.aborted_rounds == 0
    identities = world[0]
    for r, res in enumerate(results):
        inputs = {c: seeded_vector(SEED, c, r, LENGTH) for c in CLIENTS}
        drop = {lost: stage} if r == 1 else None
        sim = run_round(make_protocol(name).bind(identities), round_index=r, inputs=inputs,
                        identities=identities, transcript=None, dropouts=drop)
        assert res.contributors == sim.contributors
        assert res.survivors == sim.survivors
        check = check_against_plain(make_protocol(name), inputs, res)
        assert check["ok"], check
        assert np.abs(res.weighted_sum - sim.weighted_sum).max() <= 2 * check["tolerance"]
        assert res.total_weight == sim.total_weight
    assert results[1].dropped == (lost,)
    assert "no reply in" in results[1].stats["drop_reasons"][lost]
    # ckks keeps a client that left after the sum was fixed in it, as in process.
    assert (lost in results[1].contributors) == (stage == "ReturnDecryption")


@pytest.mark.parametrize(("name", "stage"), [("ckks", "SubmitCiphertext"), ("tee", "SubmitSealed")])
def test_below_min_survivors_the_round_aborts_and_the_next_recovers(world, name, stage):
    results, report = _rounds(make_protocol(name), world, 2,
                              {0: {"lost": tuple(CLIENTS[:3]), "at": stage}})
    assert isinstance(results[0], ProtocolAbort) and "below the threshold" in str(results[0])
    assert results[1].contributors == tuple(CLIENTS)
    assert report.ok and report.aborted_rounds == 1 and report.rounds == 1


def test_nodes_verify_the_enclave_against_their_own_allowlist(world):
    """An aggregator that runs other enclave code and allowlists it in the round's
    parameters is refused: each node checks the quote against the measurement of
    the aggregator code it runs itself."""
    other = "ab" * 48
    protocol = make_protocol("tee", allow=[other])
    protocol.measurement = other
    protocol.enclave = SimulatedEnclave(platform=protocol.platform, measurement=other,
                                        min_survivors=protocol.min_survivors)
    results, report = _rounds(protocol, world, 1)
    assert isinstance(results[0], ProtocolAbort)
    assert report.ok and report.aborted_rounds == 1
    # Every node failed the quote check when it took the Attest message.
    close = json.loads(Path(world[4]).read_text().splitlines()[-1])
    dropped = dict(close["statement"]["dropped"])
    assert set(dropped) == set(CLIENTS)
    assert all("MeasurementError" in why for why in dropped.values()), dropped


def test_nodes_refuse_weaker_protocol_parameters(world):
    results, report = _rounds(make_protocol("ckks", flood_bits=20), world, 1)
    assert isinstance(results[0], ProtocolAbort) and report.ok and report.aborted_rounds == 1
    close = json.loads(Path(world[4]).read_text().splitlines()[-1])
    assert all("ckks-min-flood-bits" in why for _, why in close["statement"]["dropped"])
    strict = NodePolicy.from_node_config({"protocols": "secagg,ckks,tee", "min-survivors": 3,
                                          "tee-allow": "cd" * 48, "tee-production": "true"})
    with pytest.raises(ProtocolAbort, match="does not take part in plain"):
        strict.apply("client-00", make_protocol("plain"), participants=4)
    with pytest.raises(ProtocolAbort, match="min-survivors = 3"):
        strict.apply("client-00", make_protocol("tee"), participants=4)
    with pytest.raises(ProtocolAbort, match="ckks-min-flood-bits = 40"):
        TRUSTING.apply("client-00", make_protocol("ckks", flood_bits=39), participants=4)
    tee = strict.apply("client-00", make_protocol("tee", min_survivors=3, allow=["ef" * 48]),
                       participants=4)
    assert tee.policy.allowed_measurements == ("cd" * 48,) and tee.policy.production
    with pytest.raises(ConfigError, match="unknown"):
        NodePolicy.from_node_config({"protocols": "secagg,fancy"})


@pytest.mark.parametrize("name", ["ckks", "tee"])
def test_nodes_train_and_aggregate_a_round(deployment, name):
    node_configs, run_config = deployment
    node_configs = {n: {**c, "threat-model": "honest-but-curious"} for n, c in node_configs.items()}
    run_config = {**run_config, "protocol": name, "rounds": 1}
    exchange = training.DirectExchange(node_configs, run_config)
    summary = run_aggregator(AggregatorSettings.from_run_config(run_config), exchange)
    (log,) = summary["rounds"]
    assert log["outcome"] == "aggregated" and log["contributors"] == CLIENTS[:3], log
    run_dir = Path(run_config["run-dir"])
    from safetensors.numpy import load_file

    aggregate = load_file(str(run_dir / "aggregates.safetensors"))["round-0"]
    result = RoundResult(weighted_sum=aggregate, total_weight=log["total_weight"],
                         survivors=tuple(CLIENTS[:3]), dropped=(), contributors=tuple(CLIENTS[:3]),
                         bytes_up=0, bytes_down=0, stats={})
    check = check_against_plain(make_protocol(name), exchange.updates[0], result)
    assert check["ok"], check
    verify = CliRunner().invoke(app, ["transcript", "verify", str(run_dir), "--json"])
    assert verify.exit_code == 0, verify.output
