"""One node, two runs on its once-noised data: run A plain PFDM (its shared model
reads x~ directly), run B DP-SGD on the same x~. The node's claim after run B is
the joint epsilon of both runs' releases, the forward-noise view, computed here
from the ledger's events with the accountant called directly: never below run
A's claim, and not the smaller DP-SGD view the min rule would take across runs."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

import securediff.federation.client_runtime as runtime_module
from securediff.flower.final_models import node_statement, open_node_models
from securediff.flower.server import AggregatorSettings, run_aggregator
from securediff.flower.trainer import UNRECORDED_RUNS, read_node_ledger
from securediff.privacy.accountants import compose_epsilon
from securediff.privacy.ledger import PrivacyLedger, Release
from securediff.statement import NOISED_DATA_ON_NODE

from . import test_flower_training as training

deployment = training.deployment
# rdp: milliseconds per claim (PLD's take seconds); its forward-noise view alone is
# 10.7 here, above the default max-epsilon 10, so the nodes allow more.
# One step of each model per round: what is checked is the ledger, not the training.
QUICK = (training.TINY.replace("local_steps = 3", "local_steps = 1")
         .replace("personal_steps = 4", "personal_steps = 1").replace("batch_size = 32", "batch_size = 16"))
PLAIN = QUICK + '[privacy]\naccountant = "rdp"\n'
DPSGD_SHARED = PLAIN + "dpsgd_shared = true\ndpsgd_epsilon = 2.0\n"
ROUNDS = 1


@pytest.fixture(autouse=True)
def _calibrate_once(monkeypatch):
    """Calibration is a pure function of its arguments; computed once per value."""
    cached = functools.cache(runtime_module.calibrate_noise_multiplier)
    monkeypatch.setattr(runtime_module, "calibrate_noise_multiplier", cached)


def _run(node_configs, run_config, tmp_path: Path, name: str, config_text: str) -> tuple[dict, Path]:
    (tmp_path / f"{name}.toml").write_text(config_text)
    cfg = {**run_config, "run-dir": str(tmp_path / name), "config": str(tmp_path / f"{name}.toml"),
           "rounds": ROUNDS}
    summary = run_aggregator(AggregatorSettings.from_run_config(cfg),
                             training.DirectExchange(node_configs, cfg))
    assert [r["outcome"] for r in summary["rounds"]] == ["aggregated"] * ROUNDS, summary
    return summary, Path(cfg["run-dir"])


def _statement(node: dict, run_dir: Path, summary: dict) -> dict:
    node_run = Path(node["state-dir"]) / "runs" / summary["run_id"]
    models = open_node_models(manifest=run_dir, shared=run_dir / "shared-model.safetensors",
                              node_run=node_run, device="cpu")
    return node_statement(models)


def test_a_dpsgd_run_on_noised_data_a_plain_run_released_keeps_the_joint_claim(deployment, tmp_path):
    node_configs, run_config = deployment
    for config in node_configs.values():
        config["max-epsilon"] = 1000.0
    node = node_configs[10]  # one node's view suffices; all three train both runs
    summary_a, dir_a = _run(node_configs, run_config, tmp_path, "plain", PLAIN)
    ledger_path = Path(node["state-dir"]) / "ledger.json"
    after_a = read_node_ledger(ledger_path)
    claim_a = _statement(node, dir_a, summary_a)["headline"]["epsilon"]
    assert claim_a == pytest.approx(after_a.epsilon("shared"))

    summary_b, dir_b = _run(node_configs, run_config, tmp_path, "dpsgd", DPSGD_SHARED)
    ledger = read_node_ledger(ledger_path)
    forward, steps = ledger.events  # noised once: run B reused run A's x~
    assert (forward.kind, steps.kind, steps.input) == ("forward_noise", "dpsgd", "noised")
    assert ledger.releases == (Release(summary_a["run_id"], "shared", through_dpsgd_only=False),
                               Release(summary_b["run_id"], "shared", through_dpsgd_only=True))
    joint = compose_epsilon([forward], delta=ledger.delta, accountant=ledger.accountant)
    min_rule = min(joint, compose_epsilon([steps], delta=ledger.delta, accountant=ledger.accountant,
                                          relation="replace_one"))
    assert min_rule < joint  # what the ledger claimed before releases were recorded
    assert ledger.epsilon("shared") == pytest.approx(joint)
    statement_b = _statement(node, dir_b, summary_b)
    assert statement_b["headline"]["epsilon"] == pytest.approx(joint)
    assert statement_b["headline"]["epsilon"] >= claim_a * (1 - 1e-9)
    # Run A's own statement, made again now, states the same joint claim.
    assert _statement(node, dir_a, summary_a)["headline"]["epsilon"] == pytest.approx(joint)
    who = {r["artefact"]: r["who_sees_it"] for r in statement_b["rows"]}
    assert NOISED_DATA_ON_NODE in who["noised data x~"]
    print(f"\nclaims ({ledger.accountant}, delta {ledger.delta:g}): run A {claim_a:.3f}; after run B "
          f"{ledger.epsilon('shared'):.3f}; the min rule across runs would say {min_rule:.3f}")


def test_a_node_ledger_from_before_release_records_is_read_at_the_forward_noise_view(tmp_path):
    from securediff.privacy.ledger import DPSGDEvent, ForwardNoiseEvent

    ledger = PrivacyLedger(client_id="c", budget_epsilon=1e6, delta=1e-5, accountant="rdp")
    forward = ForwardNoiseEvent(sigma=1.0, clip_norm=1.0, t0=500, data_id="c/members")
    ledger.charge(forward)
    ledger.charge(DPSGDEvent(1.5, 0.05, 100, "shared", input="noised"))
    old = ledger.to_dict()
    del old["releases"]  # written before releases were recorded: which runs read x~ is unknown
    (tmp_path / "ledger.json").write_text(json.dumps(old))
    read = read_node_ledger(tmp_path / "ledger.json")
    assert read.releases == (Release(UNRECORDED_RUNS, "shared", through_dpsgd_only=False),)
    assert read.epsilon("shared") == pytest.approx(
        compose_epsilon([forward], delta=1e-5, accountant="rdp"))
    assert read.epsilon("shared") > ledger.epsilon("shared")  # the min rule: less
