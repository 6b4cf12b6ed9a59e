"""secagg on the federation path: every round's aggregate equals the plain weighted
sum of the same included clients' updates within the stated quantization bound
(checked round by round, not on the final model), and the run's transcript
verifies."""

from __future__ import annotations

import json

import numpy as np

import securediff.federation.rounds as rounds_module
from protocols import load_rosters, verify_transcript
from protocols import run_round as real_run_round
from protocols.hazmat.quantize import error_bound
from protocols.messages import decode
from protocols.secagg.messages import Release
from securediff.federation.runner import FederatedRun
from securediff.federation.setup import set_up_run
from securediff.run import load_config
from securediff.storage import RunDirectory

SMALL = {
    "data": {"num_clients": 3},
    "federation": {"protocol": "secagg", "dropout_rate": 0.34, "rounds": 2, "local_steps": 2},
    "training": {"personal_steps": 2, "batch_size": 16},
    "model": {"base_channels": 8},
    "run": {"name": "sa", "insecure_seed": 5},
}


def test_every_round_matches_the_plain_weighted_sum(tmp_path, monkeypatch) -> None:
    checked = []

    def checking_run_round(protocol, *, inputs, **kwargs):
        included = []

        def tap(stage, data):
            msg = decode(data)
            if isinstance(msg, Release) and not included:
                included.extend(msg.included)
            return data

        result = real_run_round(protocol, inputs=inputs, tap=tap, **kwargs)
        weights = np.array([inputs[c].weight for c in included])
        vectors = np.stack([inputs[c].vector.astype(np.float64) for c in included])
        r = protocol.config.clip_range
        plain = weights @ np.clip(vectors, -r, r)
        bound = error_bound(total_weight=float(weights.sum()), fixed=protocol.config.fixed,
                            integer=False)
        assert result.total_weight == float(weights.sum())
        assert float(np.abs(result.weighted_sum - plain).max()) <= bound
        assert set(result.survivors) <= set(included)
        checked.append((kwargs["round_index"], tuple(included), bound))
        return result

    monkeypatch.setattr(rounds_module, "run_round", checking_run_round)
    config = load_config(None, {**SMALL, "run": {**SMALL["run"], "out_dir": str(tmp_path)}})
    run_dir = RunDirectory.create(tmp_path, "sa")
    run = FederatedRun(set_up_run(config), run_dir)
    run.set_up(resume=False)
    run.train()  # the round loop of the federation, without the evaluation that follows
    assert [r for r, _, _ in checked] == [0, 1]
    assert all(len(inc) in (2, 3) for _, inc, _ in checked)  # one client of three drops
    path = run_dir.file("transcript.jsonl")
    report = verify_transcript(path, load_rosters(run_dir.file("roster.json")))
    assert report.ok, report.problems
    assert json.loads(path.read_text().splitlines()[0])["protocol"] == "secagg"
