"""A tiny `hybrid` run: the shared denoiser trained by distributed DP-SGD through
secagg (Skellam noise shares), then personal fine-tuning. The ledgers hold what
reached each released sum, dropouts raise epsilon, a step below the noise floor
is never unmasked, the transcript verifies and a resume matches bit for bit."""

import json

import pytest
from typer.testing import CliRunner

from cli.app import app
from securediff.federation import runner as runner_module
from securediff.privacy.skellam_accounting import numeric_skellam_epsilon, skellam_epsilon
from securediff.storage import load_tensors, read_json

runner = CliRunner()

HYBRID = ["--federation.strategy", "hybrid", "--federation.protocol", "secagg",
          "--privacy.accountant", "rdp", "--privacy.target_epsilon", "8"]


class Crash(Exception):
    pass


def _train(tiny_args, name, *extra):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "5", "--json", "--run.name", name,
                                 *HYBRID, *tiny_args, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _events(run_dir):
    return {cid: led["events"] for cid, led in read_json(run_dir / "ledger.json").items()}


def test_hybrid_run_charges_what_reached_each_sum_and_verifies(tmp_path, tiny_args):
    out = _train(tiny_args, "h")
    run = tmp_path / "runs" / "h"
    steps = 2 * 3  # rounds x local_steps: one secagg round each
    events = _events(run)
    for evs in events.values():
        assert [e["kind"] for e in evs] == ["distributed_skellam"]
        assert evs[0]["steps"] == steps and evs[0]["min_survivors"] == 3  # ceil(0.8 * 3)
    ev = events["client-00"][0]
    # The run's epsilon is the Skellam RDP bound of its own event, recomputed here,
    # and above the exact numeric Renyi computation for a shift along one axis.
    eps = skellam_epsilon(l1=ev["l1_sensitivity"], l2=ev["l2_sensitivity"], variance=ev["noise_variance"],
                          sample_rate=ev["sample_rate"], steps=steps, delta=1e-5)
    assert out["summary"]["epsilon_shared_max"] == pytest.approx(eps, rel=1e-9)
    assert eps <= 8.0 + 1e-6
    numeric = numeric_skellam_epsilon(shift=round(ev["l2_sensitivity"]), variance=ev["noise_variance"],
                                      sample_rate=ev["sample_rate"], steps=steps, delta=1e-5)
    assert numeric <= eps
    stats = [r["protocol_stats"] for r in out["summary"]["rounds"]]
    assert all(s["contributors_per_step"] == [3, 3, 3] and s["aborted_steps"] == 0 for s in stats)
    verify = runner.invoke(app, ["transcript", "verify", str(run)])
    assert verify.exit_code == 0, verify.output
    assert f"{steps} round(s) aggregated" in " ".join(verify.output.split())
    assert "Skellam" in out["privacy_statement"]["rows"][0]["guarantee"]


def test_dropouts_raise_epsilon_and_below_the_floor_nothing_is_released(tmp_path, tiny_args):
    four = ["--data.num_clients", "4", "--privacy.ddp_min_survivors", "3"]
    full = _train(tiny_args, "full", *four)
    dropped = _train(tiny_args, "drop", *four, "--federation.dropout_rate", "0.25",
                     "--federation.dropout_stage", "MaskedInput")
    assert all(s == [3, 3, 3] for s in
               (r["protocol_stats"]["contributors_per_step"] for r in dropped["summary"]["rounds"]))
    # Three shares instead of four reached each sum: less noise, a larger epsilon,
    # still within the budget planned at the floor.
    e_full, e_drop = full["summary"]["epsilon_shared_max"], dropped["summary"]["epsilon_shared_max"]
    assert e_full < e_drop <= 8.0 + 1e-6
    variances = {e["noise_variance"] for evs in _events(tmp_path / "runs" / "drop").values() for e in evs}
    full_variances = {e["noise_variance"] for evs in _events(tmp_path / "runs" / "full").values() for e in evs}
    assert len(variances) == len(full_variances) == 1
    assert variances.pop() == pytest.approx(full_variances.pop() * 3 / 4)
    # A floor of 4 with one client gone: secagg refuses every unmasking, the shared
    # model never moves, and each step keeps its floor charge.
    floor = _train(tiny_args, "floor", "--data.num_clients", "4", "--privacy.ddp_min_survivors", "4",
                   "--federation.dropout_rate", "0.25", "--federation.dropout_stage", "MaskedInput")
    for r in floor["summary"]["rounds"]:
        assert r["protocol_stats"]["aborted_steps"] == 3
        assert "noise floor" in r["protocol_stats"]["abort_reasons"][0]
    init = load_tensors(tmp_path / "runs" / "floor" / "checkpoints" / "state.safetensors")
    assert init  # the run finished and checkpointed; its ledger holds the floor charges
    assert all(evs[0]["steps"] == 6 for evs in _events(tmp_path / "runs" / "floor").values())


def test_a_cut_hybrid_run_resumes_to_the_same_state(tmp_path, tiny_args, monkeypatch):
    _train(tiny_args, "whole")
    original = runner_module.FederatedRun._checkpoint
    calls = {"n": 0}

    def crash_after_first_round(self):
        original(self)
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash("simulated crash")

    monkeypatch.setattr(runner_module.FederatedRun, "_checkpoint", crash_after_first_round)
    cut = runner.invoke(app, ["train", "--insecure-deterministic", "5", "--run.name", "cut", *HYBRID, *tiny_args])
    assert isinstance(cut.exception, Crash)
    monkeypatch.setattr(runner_module.FederatedRun, "_checkpoint", original)
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "runs" / "cut.incomplete"), "--json"])
    assert result.exit_code == 0, result.output
    a = load_tensors(tmp_path / "runs" / "whole" / "checkpoints" / "state.safetensors")
    b = load_tensors(tmp_path / "runs" / "cut" / "checkpoints" / "state.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert _events(tmp_path / "runs" / "whole") == _events(tmp_path / "runs" / "cut")


@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--federation.protocol", "plain", "secagg for strategy hybrid"),
    ("--privacy.accountant", "pld", "rdp for strategy hybrid"),
    ("--protocol.min_contributors", "2", "left unset for strategy hybrid"),
])
def test_hybrid_configs_that_would_break_its_guarantee_are_refused(tiny_args, flag, value, needle):
    args = list(HYBRID)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    result = runner.invoke(app, ["train", "--insecure-deterministic", "5", *args, *tiny_args])
    assert result.exit_code == 2
    assert needle in result.output
