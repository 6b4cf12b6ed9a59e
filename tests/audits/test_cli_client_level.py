"""`securediff audit client-level`: thin over audits.client_level.audit_synthetic_run."""

import json

import pytest
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()
SMALL = ["--canaries", "10", "--canaries-out", "40", "--dim", "300", "--rounds", "2", "--real-clients", "3",
         "--seed", "1"]


def test_json_reports_an_estimate_and_the_claim():
    result = runner.invoke(app, ["audit", "client-level", *SMALL, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["protocol"] == "secagg" and out["canaries_in"] == 10
    assert out["claimed"] == pytest.approx(8.0, rel=0.01)
    assert "not a lower bound" in out["kind"]


def test_bad_mechanism_is_one_line_exit_2():
    result = runner.invoke(app, ["audit", "client-level", *SMALL, "--mechanism", "laplace"])
    assert result.exit_code == 2
    assert "--mechanism" in result.output
