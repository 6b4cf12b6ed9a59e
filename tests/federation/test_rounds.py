"""The round loop around the protocol: an aborted round releases nothing and the
run goes on; an aggregate that differs from the plain weighted sum stops the run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import securediff.federation.rounds as rounds_module
from protocols import run_round as real_run_round
from protocols.errors import ProtocolAbort, ProtocolError
from securediff.federation.runner import FederatedRun
from securediff.federation.setup import set_up_run
from securediff.run import load_config
from securediff.storage import RunDirectory

SMALL = {
    "data": {"num_clients": 3},
    "federation": {"rounds": 2, "local_steps": 1},
    "training": {"personal_steps": 2, "batch_size": 8},
    "model": {"base_channels": 8},
    "run": {"name": "r", "insecure_seed": 3},
}


def _run(tmp_path) -> FederatedRun:
    config = load_config(None, {**SMALL, "run": {**SMALL["run"], "out_dir": str(tmp_path)}})
    run = FederatedRun(set_up_run(config), RunDirectory.create(tmp_path, "r"))
    run.set_up(resume=False)
    return run


def test_an_aborted_round_leaves_the_shared_model_and_the_run_goes_on(tmp_path, monkeypatch):
    run = _run(tmp_path)
    seen = []

    def flaky(protocol, *, round_index, **kwargs):
        seen.append(run.state.strategy.global_vector().copy())
        if round_index == 0:
            raise ProtocolAbort("simulated: too few survivors")
        return real_run_round(protocol, round_index=round_index, **kwargs)

    monkeypatch.setattr(rounds_module, "run_round", flaky)
    run.train()
    logs = run.state.round_logs
    assert [log["round"] for log in logs] == [0, 1]
    assert logs[0]["protocol_stats"] == {"aborted": "simulated: too few survivors"}
    assert logs[0]["contributors"] == [] and logs[0]["survivors"] == []
    assert np.array_equal(seen[0], seen[1])  # round 0 changed nothing
    assert logs[1]["protocol_stats"]["check_against_plain"]["ok"]
    assert sorted(logs[1]["contributors"]) == sorted(logs[1]["clients"])


def test_an_aggregate_off_the_plain_sum_stops_the_run(tmp_path, monkeypatch):
    run = _run(tmp_path)

    def tampering(protocol, **kwargs):
        result = real_run_round(protocol, **kwargs)
        shifted = result.weighted_sum.copy()
        shifted[0] += 1e-3
        return dataclasses.replace(result, weighted_sum=shifted)

    monkeypatch.setattr(rounds_module, "run_round", tampering)
    with pytest.raises(ProtocolError, match="differs from the plain weighted sum"):
        run.train()
