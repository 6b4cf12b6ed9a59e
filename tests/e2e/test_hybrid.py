"""A tiny `hybrid` run: the shared denoiser trained by distributed DP-SGD through
secagg (Skellam noise shares), then personal fine-tuning. The ledgers hold what
reached each released sum, dropouts raise epsilon, a step below the noise floor
is never unmasked, the transcript verifies and a resume matches bit for bit."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from securediff.privacy.accountants import compose_epsilon
from securediff.privacy.ledger import PrivacyLedger
from securediff.privacy.skellam_accounting import numeric_skellam_epsilon, skellam_epsilon
from securediff.storage import load_tensors, read_json

from .conftest import at_checkpoint, no_checkpoint_hooks

runner = CliRunner()

HYBRID = ["--federation.strategy", "hybrid", "--protocol", "secagg",
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
    dropped = _train(tiny_args, "drop", *four, "--dropout-rate", "0.25",
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
                   "--dropout-rate", "0.25", "--federation.dropout_stage", "MaskedInput")
    for r in floor["summary"]["rounds"]:
        assert r["protocol_stats"]["aborted_steps"] == 3
        assert "noise floor" in r["protocol_stats"]["abort_reasons"][0]
    init = load_tensors(tmp_path / "runs" / "floor" / "checkpoints" / "state.safetensors")
    assert init  # the run finished and checkpointed; its ledger holds the floor charges
    assert all(evs[0]["steps"] == 6 for evs in _events(tmp_path / "runs" / "floor").values())


@pytest.mark.parametrize("forward", [False, True], ids=["hybrid", "hybrid_forward"])
def test_a_cut_hybrid_run_resumes_to_the_same_state(tmp_path, tiny_args, monkeypatch, forward):
    extra = ["--federation.hybrid_forward", "true", "--privacy.t0", "850"] if forward else []
    _train(tiny_args, "whole", *extra)
    def crash_after_first_round(run, n):
        if n == 2:
            raise Crash("simulated crash")

    at_checkpoint(monkeypatch, "after", crash_after_first_round)
    cut = runner.invoke(app, ["train", "--insecure-deterministic", "5", "--run.name", "cut", *HYBRID, *tiny_args,
                              *extra])
    assert isinstance(cut.exception, Crash)
    no_checkpoint_hooks(monkeypatch)
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "runs" / "cut.incomplete"), "--json"])
    assert result.exit_code == 0, result.output
    a = load_tensors(tmp_path / "runs" / "whole" / "checkpoints" / "state.safetensors")
    b = load_tensors(tmp_path / "runs" / "cut" / "checkpoints" / "state.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert _events(tmp_path / "runs" / "whole") == _events(tmp_path / "runs" / "cut")
    if forward:  # x~ came back from the checkpoint, never redrawn
        assert [e["kind"] for e in _events(tmp_path / "runs" / "cut")["client-00"]] == [
            "forward_noise", "distributed_skellam"]


@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--protocol", "plain", "secagg for strategy hybrid"),
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


FORWARD = ["--federation.hybrid_forward", "true", "--privacy.t0", "850"]


def test_hybrid_forward_composes_the_forward_noise_with_the_steps(tmp_path, tiny_args):
    """hybrid_forward: x~ released once at t0 (as PFDM), then steps whose Skellam
    noise is calibrated for what the forward noise leaves of the target."""
    out = _train(tiny_args, "hf", *FORWARD)
    run = tmp_path / "runs" / "hf"
    for evs in _events(run).values():
        assert [e["kind"] for e in evs] == ["forward_noise", "distributed_skellam"]
        assert evs[0]["t0"] == 850 and evs[1]["steps"] == 6
    ledger = PrivacyLedger.from_dict(read_json(run / "ledger.json")["client-00"])
    forward, steps = ledger.events
    # Recomputed from the events: replace-one (the forward noise's relation), the
    # Skellam steps analysed directly under it; no room left below the target.
    eps = compose_epsilon([forward, steps], delta=1e-5, accountant="rdp", relation="replace_one")
    assert out["summary"]["epsilon_shared_max"] == pytest.approx(eps, rel=1e-9)
    assert 7.9 < eps <= 8.0 + 1e-6
    assert compose_epsilon([forward], delta=1e-5, accountant="rdp") < 3.0  # t0 = 850, C = 10
    # More noise than plain hybrid at the same target: the steps get what is left.
    _train(tiny_args, "h0")
    plain = _events(tmp_path / "runs" / "h0")["client-00"][0]
    assert steps.noise_variance > plain["noise_variance"]
    # Reused from the checkpoint, never re-noised; the statement names both parts.
    assert (run / "checkpoints" / "noised-data.safetensors").exists()
    rows = {r["artefact"]: r["guarantee"] for r in out["privacy_statement"]["rows"]}
    assert "t0 = 850" in rows["noised data x~"]
    assert "x~ for t > t0" in rows["shared denoiser and its updates"]
    verify = runner.invoke(app, ["transcript", "verify", str(run)])
    assert verify.exit_code == 0, verify.output


def test_a_step_adds_the_raw_part_below_t0_and_the_noised_part_above(monkeypatch):
    """The share encodes clipped_sum(raw, t <= t0) + clipped_sum(x~ of an independent
    sample, t > t0): the x~ part never enters the raw part's sample or clipping."""
    import torch

    from securediff.diffusion.schedule import make_schedule
    from securediff.federation import distributed
    from securediff.models.unet import UNet, UNetSpec
    from securediff.privacy.dpsgd import poisson_sample
    from securediff.privacy.skellam import plan_skellam
    from securediff.rng import RandomSource

    spec = UNetSpec(in_channels=1, image_size=8, num_classes=10, base_channels=8, channel_mults=(1, 2))
    model = UNet(spec)
    dim = sum(p.numel() for p in model.parameters())
    schedule = make_schedule("linear", T=100, beta_start=1e-4, beta_end=0.02)
    sk = plan_skellam(dim=dim, l2_clip=1.0, noise_multiplier=1.0, min_survivors=1, max_clients=1,
                      expected_batch=8.0)
    plan = distributed.DistributedPlan(skellam=sk, sample_rate=0.5, steps_per_round=1, total_members=8)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    xt, yt = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    root = RandomSource.insecure_from_seed(3)
    seen = {}
    monkeypatch.setattr(distributed, "encode_share", lambda summed, plan, source: seen.setdefault("sum", summed))
    grads = distributed.ClientGradients(model)
    common = dict(clip=1.0, multiplicity=1, schedule=schedule, null_label=spec.null_label, label_dropout=0.0)
    noised = distributed.NoisedPart(xt, yt, 40, sampling_source=root.child("s2"),
                                    generator=torch.Generator().manual_seed(2))
    distributed.client_share(grads, plan, x=x, y=y, sampling_source=root.child("s1"), noise_source=None,
                             generator=torch.Generator().manual_seed(1), noised=noised, **common)
    i = torch.from_numpy(poisson_sample(8, sample_rate=0.5, source=root.child("s1")))
    j = torch.from_numpy(poisson_sample(8, sample_rate=0.5, source=root.child("s2")))
    raw = grads.clipped_sum(x[i], y[i], generator=torch.Generator().manual_seed(1), end=40, **common)
    above = grads.clipped_sum(xt[j], yt[j], generator=torch.Generator().manual_seed(2), start=40, **common)
    np.testing.assert_allclose(seen["sum"], raw + above, rtol=1e-6, atol=1e-9)
    assert np.linalg.norm(above) <= len(j) * 1.0 + 1e-6 and np.linalg.norm(above) > 0
    grads.close()


@pytest.mark.parametrize(("extra", "needle"), [
    (["--federation.hybrid_forward", "true"], "privacy.t0"),
    (["--federation.hybrid_forward", "true", "--privacy.t0", "500"], "alone costs epsilon"),
])
def test_hybrid_forward_needs_a_t0_that_leaves_budget(tiny_args, extra, needle):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "5", *HYBRID, *tiny_args, *extra])
    assert result.exit_code == 2
    assert needle in result.output


def test_hybrid_forward_is_refused_for_other_strategies(tiny_args):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "5", "--federation.strategy", "pfdm",
                                 "--federation.hybrid_forward", "true", *tiny_args])
    assert result.exit_code == 2 and "federation.hybrid_forward" in result.output
