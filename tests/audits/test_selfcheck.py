"""The self-check on a small, fast configuration, through the CLI."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import audits.selfcheck as selfcheck_module
from audits.selfcheck import Check, SelfCheckConfig, SelfCheckReport
from cli.audit import audit_app
from securediff.errors import ConfigError

app = typer.Typer()
app.add_typer(audit_app, name="audit")
runner = CliRunner()
FAST = ["--trials", "100000", "--canaries", "1000", "--dpsgd-steps", "2",
        "--blackbox-canaries", "0", "--seed", "11"]
# Two defects need more than these sizes to be seen (the min-rule ledger 2e6 trial
# pairs, the understated sample rate 16 steps): tests/audits/test_canaries.py runs
# each at the sizes it needs; the CLI's defaults run all of them.
FAST_DEFECTS = ("no-noise", "noise-10x-smaller", "fresh-noise-every-epoch", "clipping-disabled",
                "per-copy-clipping")


def test_fast_selfcheck_flags_every_broken_mechanism_and_no_correct_one() -> None:
    selected = [arg for d in FAST_DEFECTS for arg in ("--defect", d)]
    result = runner.invoke(app, ["audit", "selfcheck", "--json", *FAST, *selected])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["meets_minimums"] is False
    rows = report["checks"]
    broken = {(r["mechanism"], r["defect"], r.get("sample_rate_used")) for r in rows if r["broken"]}
    assert broken == {("forward-noise", d, None) for d in ("no-noise", "noise-10x-smaller",
                                                           "fresh-noise-every-epoch",
                                                           "clipping-disabled")} \
        | {("dp-sgd", d, 1.0) for d in ("no-noise", "noise-10x-smaller", "clipping-disabled",
                                         "per-copy-clipping")} \
        | {("dp-sgd", "no-noise", 0.5)}  # Poisson batches: the sampling code runs too
    per_copy = next(r for r in rows if r["defect"] == "per-copy-clipping")
    assert per_copy["noise_multiplicity"] == 8
    correct_rates = {r.get("sample_rate_used") for r in rows
                     if r["mechanism"] == "dp-sgd" and not r["broken"]}
    assert correct_rates == {1.0, 0.5}
    for r in rows:
        assert {"epsilon_claimed", "epsilon_lower_bound", "ceiling", "confidence", "verdict"} <= set(r)
        assert r["epsilon_lower_bound"] <= r["ceiling"] + 1e-9
        if r["broken"]:
            assert r["verdict"] == "violation", r
            assert r["epsilon_lower_bound"] > r["epsilon_claimed"]
        else:
            assert r["verdict"] == "consistent", r  # each could have seen a violation
    claims = [r["epsilon_claimed"] for r in rows if r["mechanism"] == "dp-sgd"]
    assert all(c == pytest.approx(4.0, abs=1e-3) for c in claims)
    fig = report["figures"]
    assert fig["forward_noise_at_epsilon_4"]["trials"] == 100000
    assert 0.4 < fig["forward_noise_at_epsilon_4"]["fraction"] <= 1.0
    assert 0.4 < fig["forward_noise_at_epsilon_8.77"]["fraction"] <= 1.0
    assert 0.0 < fig["dpsgd_whitebox"]["epsilon_lower_bound"] < 4.0
    assert 0.0 < fig["dpsgd_whitebox_at_sample_rate_0.5"]["epsilon_lower_bound"] < 4.0
    # The Gaussian-DP epsilon is read only where the claimed curve is Gaussian.
    assert 0.0 < fig["forward_noise_at_epsilon_4"]["epsilon_gdp"] <= 4.0 + 1e-9
    assert all("epsilon_gdp" not in r.get("rates", {}) for r in rows)


def test_a_failed_check_exits_1(monkeypatch) -> None:
    row = {"mechanism": "forward-noise", "defect": "no-noise", "audit": "x",
           "epsilon_claimed": 4.0, "epsilon_lower_bound": 1.0, "ceiling": 9.0,
           "confidence": 0.95, "verdict": "consistent"}
    failing = SelfCheckReport(config=SelfCheckConfig(forward_trials=10, canaries=10),
                              checks=(Check(row, broken=True, primary=True),), seconds=0.0)
    assert failing.passed is False
    monkeypatch.setattr(selfcheck_module, "run_selfcheck", lambda **_: failing)
    result = runner.invoke(app, ["audit", "selfcheck", *FAST])
    assert result.exit_code == 1
    assert "FAILED" in result.output


def test_check_semantics_and_config_validation() -> None:
    row = {"verdict": "violation"}
    assert Check(row, broken=True, primary=True).ok is True
    assert Check(row, broken=False, primary=True).ok is False
    assert Check({"verdict": "consistent"}, broken=True, primary=False).ok is None
    assert SelfCheckConfig().meets_minimums
    with pytest.raises(ConfigError):
        SelfCheckConfig(canaries=1)
    with pytest.raises(ConfigError):
        SelfCheckConfig(defects=("typo",))
    assert SelfCheckConfig(defects=("no-noise",)).runs("no-noise")
    assert not SelfCheckConfig(defects=("no-noise",)).runs("per-copy-clipping")
