"""DP-SGD on the nodes of a run across machines, through the stand-in Grid of
test_flower_training: each node plans, charges and writes its DP-SGD as the
in-process runner does for the same client, before its update can leave."""

from __future__ import annotations

import functools
import json
import tomllib
from pathlib import Path

import pytest

import securediff.federation.client_runtime as runtime_module
from securediff.errors import ConfigError, PrivacyError
from securediff.federation.runner import FederatedRun
from securediff.federation.setup import set_up_run
from securediff.flower.client import handle_request
from securediff.flower.exchange import TRAIN_PREFIX
from securediff.flower.server import AggregatorSettings, run_aggregator
from securediff.privacy.ledger import PrivacyLedger
from securediff.run import load_config
from securediff.storage import RunDirectory

from . import test_flower_training as training

pytestmark = pytest.mark.slow(seconds=45)  # rough file total, CI machine

deployment = training.deployment
CLIENTS, ROUNDS = training.CLIENTS, 2
DPSGD = training.TINY + """
[privacy]
accountant = "rdp"
dpsgd_shared = true
dpsgd_personal = true
dpsgd_epsilon = 2.0
"""


@pytest.fixture(autouse=True)
def _calibrate_once(monkeypatch):
    """Calibration is a pure function of (target, q, steps, delta, accountant); both
    sides call the same one, so the test computes each value once (about 2 s each)."""
    cached = functools.cache(runtime_module.calibrate_noise_multiplier)
    monkeypatch.setattr(runtime_module, "calibrate_noise_multiplier", cached)


class LedgerWatch(training.DirectExchange):
    """Records each node's ledger on disk as its `train` reply leaves the node."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.on_disk: dict[tuple[int, str], PrivacyLedger] = {}

    def to_nodes(self, requests, group, timeout=None):
        replies = super().to_nodes(requests, group, timeout)
        for node, req in requests.items():
            trains = req.get("kind") == "train" or TRAIN_PREFIX + "run" in req
            if trains and "error" not in replies[node]:
                cfg = self.node_configs[node]
                raw = json.loads((Path(cfg["state-dir"]) / "ledger.json").read_text())
                self.on_disk[(req["round"], cfg["client-id"])] = PrivacyLedger.from_dict(raw)
        return replies


def _in_process_ledgers(tmp_path: Path) -> dict[str, PrivacyLedger]:
    overrides = tomllib.loads(DPSGD)
    overrides["data"] = {"num_clients": len(CLIENTS)}
    overrides["federation"] |= {"rounds": ROUNDS, "protocol": "secagg"}
    overrides["run"] = {"name": "inproc", "out_dir": str(tmp_path), "workers": 1}
    run = FederatedRun(set_up_run(load_config(None, overrides)),
                       RunDirectory.create(tmp_path, "inproc"))
    run.set_up(resume=False)
    run.train()
    return {c.client_id: c.ledger for c in run.state.clients}


def test_node_ledgers_hold_the_dpsgd_events_of_the_in_process_run(deployment, tmp_path):
    node_configs, run_config = deployment
    (tmp_path / "tiny.toml").write_text(DPSGD)
    for node in node_configs.values():
        node["max-epsilon"] = 1000.0  # forward noise plus shared DP-SGD, by group privacy
    exchange = LedgerWatch(node_configs, run_config)
    summary = run_aggregator(AggregatorSettings.from_run_config(run_config), exchange)
    assert [r["outcome"] for r in summary["rounds"]] == ["aggregated"] * ROUNDS, summary

    expected = _in_process_ledgers(tmp_path / "inproc")
    for node in node_configs.values():
        cid = node["client-id"]
        raw = json.loads((Path(node["state-dir"]) / "ledger.json").read_text())
        ledger = PrivacyLedger.from_dict(raw)
        # The same events, DP-SGD calibrated for this client's own member count.
        assert ledger.events == expected[cid].events, cid
        assert [(e.kind, e.artefact) for e in ledger.events] == [
            ("forward_noise", "shared"), ("dpsgd", "shared"), ("dpsgd", "personal")]
        assert ledger.epsilon("shared") == pytest.approx(expected[cid].epsilon("shared"))
        # Write-ahead: each round's shared steps were on disk when its update left.
        for r in range(ROUNDS):
            shared = [e for e in exchange.on_disk[(r, cid)].events
                      if e.kind == "dpsgd" and e.artefact == "shared"]
            assert shared[0].steps == (r + 1) * 3  # local_steps = 3 in TINY


def test_a_node_refuses_a_dpsgd_run_past_its_max_epsilon(deployment):
    node_configs, run_config = deployment
    node = node_configs[10]
    describe = {"kind": "describe", "round": "describe", "config": DPSGD}
    # Forward noise alone fits in 10, and so does shared DP-SGD on its noised data (the
    # smaller view counts); personal DP-SGD at epsilon 20 on raw records does not.
    # (PLD here: RDP's forward-noise epsilon alone is 10.7 at this t0.)
    pld = DPSGD.replace('accountant = "rdp"', 'accountant = "pld"')
    assert handle_request(node, run_config, {}, {**describe, "config": training.TINY})
    assert handle_request(node, run_config, {}, {**describe, "config": pld})
    with pytest.raises(PrivacyError, match="DP-SGD.*max-epsilon 10"):
        handle_request(node, run_config, {}, {**describe, "config": pld.replace("dpsgd_epsilon = 2.0",
                                                                               "dpsgd_epsilon = 20.0")})
    adaptive = DPSGD.replace('accountant = "rdp"', 'accountant = "rdp"\nclipping = "adaptive"')
    with pytest.raises(ConfigError, match="adaptive needs state shared by all clients"):
        handle_request(node, run_config, {}, {**describe, "config": adaptive})
    hybrid = (training.TINY.replace("[federation]", '[federation]\nstrategy = "hybrid"\n'
                                    'protocol = "secagg"') + '[privacy]\naccountant = "rdp"\n')
    with pytest.raises(ConfigError, match="only pfdm, fedavg"):
        handle_request(node, run_config, {}, {**describe, "config": hybrid})


def test_personal_dpsgd_without_personal_steps_is_the_same_config_error_on_both_sides(deployment):
    node_configs, run_config = deployment
    zero = DPSGD.replace("personal_steps = 4", "personal_steps = 0")
    assert zero != DPSGD
    with pytest.raises(ConfigError, match=r"training\.personal_steps = 0") as in_process:
        load_config(None, tomllib.loads(zero))
    with pytest.raises(ConfigError, match=r"training\.personal_steps = 0") as on_node:
        handle_request(node_configs[10], run_config, {},
                       {"kind": "describe", "round": "describe", "config": zero})
    assert str(on_node.value) == str(in_process.value)
