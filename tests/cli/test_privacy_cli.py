"""`securediff privacy`: reference values, JSON output, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.privacy import privacy_app
from securediff.privacy.forward import forward_sigma, linear_alphas_cumprod
from securediff.privacy.ledger import DPSGDEvent, ForwardNoiseEvent, PrivacyLedger

app = typer.Typer()
app.add_typer(privacy_app, name="privacy")
runner = CliRunner()


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["privacy", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(("t0", "classic", "exact"), [(690, 10.24, 8.77), (800, 4.07, 3.31)])
def test_forward_reference(t0: int, classic: float, exact: float) -> None:
    out = run_json("forward", "--t0", str(t0), "--clip", "10", "--delta", "1e-5")
    assert out["epsilon_classic"] == pytest.approx(classic, abs=0.05)
    assert out["epsilon_exact"] == pytest.approx(exact, abs=0.05)
    assert out["t0"] == t0 and out["sensitivity"] == 20.0
    assert out["abar_t0"] == pytest.approx(linear_alphas_cumprod()[t0], rel=1e-12)
    assert out["sigma"] == pytest.approx(forward_sigma(out["abar_t0"]))


def test_forward_calibrates_t0() -> None:
    out = run_json("forward", "--target-epsilon", "8.78", "--clip", "10")
    assert out["t0"] == 690 and out["epsilon_exact"] <= 8.78
    out = run_json("forward", "--target-epsilon", "10.25", "--method", "classic")
    assert out["t0"] == 690


def test_forward_table_output() -> None:
    result = runner.invoke(app, ["privacy", "forward", "--t0", "750"])
    assert result.exit_code == 0, result.output
    assert "epsilon_exact" in result.stdout and "5.2" in result.stdout


@pytest.mark.parametrize(
    ("accountant", "expected"), [("rdp", 3.142), ("prv", 2.887), ("pld", 2.882)]
)
def test_dpsgd_epsilon_reference(accountant: str, expected: float) -> None:
    out = run_json(
        "epsilon",
        "--noise-multiplier",
        "1.0",
        "--sample-rate",
        "0.00512",
        "--steps",
        "10000",
        "--delta",
        "1e-5",
        "--accountant",
        accountant,
    )
    assert out["epsilon"] == pytest.approx(expected, abs=0.05)
    assert out["accountant"] == accountant


@pytest.mark.parametrize(
    "args",
    [
        ["forward", "--t0", "690", "--delta", "-1e-5"],
        ["forward", "--t0", "1001"],
        ["forward", "--t0", "0"],
        ["forward", "--t0", "690", "--target-epsilon", "5"],
        ["forward"],
        ["forward", "--t0", "690", "--schedule", "sigmoid"],
        ["forward", "--target-epsilon", "0.01"],
        [
            "epsilon",
            "--noise-multiplier",
            "1",
            "--sample-rate",
            "0.01",
            "--steps",
            "10",
            "--accountant",
            "gdp",
        ],
        [
            "epsilon",
            "--noise-multiplier",
            "1",
            "--sample-rate",
            "0.01",
            "--steps",
            "10",
            "--delta",
            "-1",
        ],
        [
            "epsilon",
            "--noise-multiplier",
            "1",
            "--sample-rate",
            "0.01",
            "--steps",
            "10",
            "--accountant",
            "exact",
        ],
        ["epsilon", "--noise-multiplier", "1", "--sample-rate", "2", "--steps", "10"],
        ["epsilon", "--noise-multiplier", "1", "--sample-rate", "0.01", "--steps", "0"],
    ],
)
def test_bad_values_exit_2(args: list[str]) -> None:
    result = runner.invoke(app, ["privacy", *args])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""


def _write_run(tmp_path: Path) -> dict[str, PrivacyLedger]:
    sigma = forward_sigma(linear_alphas_cumprod()[750])
    a = PrivacyLedger(client_id="a", budget_epsilon=20.0, delta=1e-5)
    a.charge(ForwardNoiseEvent(sigma=sigma, clip_norm=10.0, t0=750, data_id="a/train"))
    b = PrivacyLedger(client_id="b", budget_epsilon=20.0, delta=1e-5)
    b.charge(ForwardNoiseEvent(sigma=sigma, clip_norm=12.0, t0=750, data_id="b/train"))
    b.charge(DPSGDEvent(noise_multiplier=1.0, sample_rate=0.02, steps=100, artefact="personal"))
    ledgers = {"a": a, "b": b}
    (tmp_path / "ledger.json").write_text(json.dumps({k: v.to_dict() for k, v in ledgers.items()}))
    return ledgers


def test_ledger_recomputes_every_client(tmp_path: Path) -> None:
    ledgers = _write_run(tmp_path)
    out = run_json("ledger", str(tmp_path))
    assert set(out["clients"]) == {"a", "b"}
    for cid, led in ledgers.items():
        shared = out["clients"][cid]["artefacts"]["shared"]["epsilon"]
        assert shared["exact"] == pytest.approx(led.epsilon("shared", accountant="exact"))
        assert shared["pld"] == pytest.approx(led.epsilon("shared", accountant="pld"))
    assert out["clients"]["a"]["artefacts"]["shared"]["epsilon"]["exact"] == pytest.approx(
        5.20, abs=0.05
    )
    assert "personal" not in out["clients"]["a"]["artefacts"]
    personal = out["clients"]["b"]["artefacts"]["personal"]
    assert personal["epsilon"]["exact"] is None
    assert personal["claimed"]["epsilon"] == pytest.approx(
        ledgers["b"].epsilon("personal"), abs=0.05
    )
    # headline: the worst client per artefact (b clips at 12, so it pays more)
    assert out["headline"]["shared"]["client_id"] == "b"
    assert out["headline"]["shared"]["accountant"] == "exact"

    table = runner.invoke(app, ["privacy", "ledger", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert "personal" in table.stdout and "shared" in table.stdout


def test_ledger_missing_or_corrupt_exits_3(tmp_path: Path) -> None:
    result = runner.invoke(app, ["privacy", "ledger", str(tmp_path)])
    assert result.exit_code == 3
    (tmp_path / "ledger.json").write_text("{broken")
    assert runner.invoke(app, ["privacy", "ledger", str(tmp_path)]).exit_code == 3
    (tmp_path / "ledger.json").write_text(json.dumps({"a": {"format": 1, "events": []}}))
    assert runner.invoke(app, ["privacy", "ledger", str(tmp_path)]).exit_code == 3


def test_ledger_of_a_finished_run_is_checked_against_its_manifest(tmp_path: Path) -> None:
    """An edited sigma would print a smaller epsilon: a finished run's ledger is
    reported only if it is the one the run ended with."""
    import hashlib

    _write_run(tmp_path)
    ledger = tmp_path / "ledger.json"
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"files": {"ledger.json": hashlib.sha256(ledger.read_bytes()).hexdigest()}}))
    assert runner.invoke(app, ["privacy", "ledger", str(tmp_path)]).exit_code == 0
    ledger.write_text(ledger.read_text().replace('"noise_multiplier": 1.0',
                                                 '"noise_multiplier": 100.0'))
    edited = runner.invoke(app, ["privacy", "ledger", str(tmp_path)])
    assert edited.exit_code == 3 and "changed after the run finished" in edited.output
    ledger.write_bytes(b"\xff\xfe binary")
    (tmp_path / "manifest.json").unlink()
    binary = runner.invoke(app, ["privacy", "ledger", str(tmp_path)])
    assert binary.exit_code == 3 and "Traceback" not in binary.output
