"""One tiny finished run for the report and export tests (trained once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from tests.e2e.conftest import TINY


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report-runs")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: one intra-op thread is faster here
    try:
        result = CliRunner().invoke(app, ["train", "--insecure-deterministic", "3", "--run.out_dir",
                                          str(out), "--run.name", "tiny", "--json", *TINY])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return out / "tiny"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A copy a test may add to or damage, under the same name."""
    return Path(shutil.copytree(finished_run, tmp_path / finished_run.name))
