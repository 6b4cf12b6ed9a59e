"""Every table fits an 80-column terminal without cutting what a reader looks up:
client ids whole, no cell shortened to an ellipsis, no line over 80 columns."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli import common
from cli.app import app
from cli.render import partition_table, statement_table, summary_table

from ..e2e.conftest import TINY

cli = CliRunner()
IDS = [f"client-{i:02d}" for i in range(10)]


def _render(table) -> str:
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


# Printed unwrapped on purpose: one line that grep finds and a shell can paste.
ONE_LINERS = ("protocol ", "roster pinned for review:")


def _readable(text: str, ids: list[str]) -> None:
    assert "…" not in text, text
    assert all(len(line) <= 80 for line in text.splitlines() if not line.startswith(ONE_LINERS)), text
    for cid in ids:
        assert any(cid in line for line in text.splitlines()), (cid, text)


@pytest.mark.parametrize("strategy", ["pfdm", "hybrid"])
def test_a_real_statement_is_shown_whole_at_80_columns(strategy):
    """Nothing cropped at the right edge: every word of every cell is on screen."""
    import math

    from securediff.statement import privacy_statement

    statement = privacy_statement(
        strategy=strategy, protocol_secure=True, protocol_name="tee", private=True, delta=1e-5,
        t0=675, clip_norm=10.0, forward_exact=9.97, forward_classic=11.57, shared_epsilon=9.97,
        personal_epsilon=math.inf, accountant="rdp", labels="public", label_epsilon=1.0)
    text = _render(statement_table(statement))
    _readable(text, [])
    shown = set(text.split())
    for row in statement["rows"]:
        for cell in row.values():
            missing = [w for w in str(cell).split() if len(w) <= 16 and w not in shown]
            assert not missing, (missing, text)


def test_partition_and_summary_of_ten_clients_fit_80_columns():
    rows = [{"client": cid, "members": 1234, "holdout": 321, "class_counts": [999] * 10,
             "minority_classes": [1, 3, 7, 9]} for cid in IDS]
    _readable(_render(partition_table(rows, 10)), IDS)
    clients = [{"client_id": cid, "members": 1234, "epsilon_shared": 9.969, "accuracy": 0.812,
                "fid_majority": 123.45, "fid_minority": 234.56, "bias_std": 0.123, "bias_gap": 0.456}
               for cid in IDS]
    summary = {"strategy": "hybrid", "dataset": "colored-digits", "num_clients": 10,
               "protocol": "secagg", "private": True, "epsilon_shared_max": 9.969,
               "mean": {"accuracy": 0.8, "fid_majority": 1.0, "fid_minority": 2.0, "bias_std": 0.1,
                        "bias_gap": 0.2}}
    _readable(_render(summary_table(clients, summary)), IDS)
    statement = {"rows": [{"artefact": "shared denoiser", "who_sees_it": "everyone " * 8,
                           "guarantee": "(9.97, 1e-05)-DP " * 10}], "notices": []}
    _readable(_render(statement_table(statement)), [])


@pytest.fixture
def console_80():
    old = common.console._width, common.err_console._width
    common.console.width = common.err_console.width = 80
    yield
    common.console._width, common.err_console._width = old


def test_train_and_ledger_output_fit_80_columns(tmp_path, console_80):
    out = tmp_path / "runs"
    train = cli.invoke(app, ["train", "--insecure-deterministic", "1", "--run.name", "narrow",
                             "--run.out_dir", str(out), *TINY])
    assert train.exit_code == 0, train.output
    ids = [f"client-{i:02d}" for i in range(3)]
    _readable(train.output, ids)
    ledger = cli.invoke(app, ["privacy", "ledger", str(out / "narrow"), "--split"])
    assert ledger.exit_code == 0, ledger.output
    _readable(ledger.output, ids)


def test_a_table_whose_words_do_not_fit_side_by_side_folds_them_rather_than_crop(console_80):
    """The self-check's nine columns: Rich would crop the last ones silently."""
    from cli.audit import _selfcheck_table

    check = {"mechanism": "dpsgd-fused", "defect": "sample-rate-understated",
             "audit": "white-box one-run + rates", "epsilon_claimed": 4.0, "epsilon_lower_bound": 7.35,
             "ceiling": 7.66, "confidence": 0.95, "verdict": "violation", "ok": True}
    text = _render(_selfcheck_table({"passed": True, "checks": [check]}))
    _readable(text, ["dpsgd-fused"])
    for word in ("claimed", "ceiling", "conf", "verdict", "ok", "7.35", "7.66", "0.95", "yes"):
        assert word in text.split(), (word, text)
