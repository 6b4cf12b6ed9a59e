"""The experiment tables from hand-made cell files: both downstream classifiers'
columns, a cell evaluated before the CNN shown as n/a, and the collaboration gain
against the best non-collaborative row of each setting and metric."""

from __future__ import annotations

from pathlib import Path

import pytest

from securediff.experiments.aggregate import aggregate
from securediff.experiments.document import epsilon_plot, markdown_block
from securediff.experiments.suites import Method, Suite
from securediff.storage import atomic_write_json

S, T = "setting S", "setting T"
SUITE = Suite("hand", "hand-made cells", {}, (
    Method("local", "local", "none", None, setting=S),
    Method("public-only", "public-only", "none", None, setting=S),
    Method("local+public", "local+public", "none", None, setting=S),
    Method("pfdm", "pfdm", "exact", 10.0, setting=S),
    Method("centralized", "centralized", "none", None, setting=S),
    Method("t-local", "local", "none", None, setting=T),
    Method("t-fedavg", "fedavg", "none", None, setting=T),
), seeds=2)

# method -> per seed (accuracy, accuracy_cnn, bias_std, bias_gap, fid_minority); None: absent
# from the cell's metrics (evaluated before the CNN was reported).
CELLS = {
    "local": [(0.50, 0.40, 0.20, 0.50, 10.0), (0.60, 0.50, 0.20, 0.50, 10.0)],
    "public-only": [(0.30, 0.70, 0.10, 0.40, 20.0), (0.30, 0.80, 0.10, 0.40, 20.0)],
    "local+public": [(0.70, None, 0.30, 0.30, 5.0), (0.80, None, 0.30, 0.30, 5.0)],
    "pfdm": [(0.75, 0.80, 0.08, 0.36, 4.0), (0.90, 0.85, 0.14, 0.33, 4.5)],
    # Pooled raw data: better than every row, yet collaborative, so never the baseline.
    "centralized": [(0.99, 0.99, 0.01, 0.01, 1.0), (0.99, 0.99, 0.01, 0.01, 1.0)],
    "t-local": [(0.40, 0.45, 0.20, 0.40, 8.0), (0.50, 0.55, 0.20, 0.40, 8.0)],
    "t-fedavg": [(0.45, 0.40, 0.25, 0.50, 6.0), (0.60, 0.50, 0.10, 0.20, 4.0)],
}
KEYS = ("accuracy", "accuracy_cnn", "bias_std", "bias_gap", "fid_minority")


def _write(root: Path) -> None:
    atomic_write_json(root / "suite.json", {"suite": SUITE.name, "quick": True, "seeds": 2, "base": {}})
    for method, seeds in CELLS.items():
        for seed, values in enumerate(seeds):
            mean = {k: v for k, v in zip(KEYS, values, strict=True) if v is not None}
            atomic_write_json(root / "cells" / method / f"seed-{seed}" / "cell.json", {
                "method": method, "seed": seed, "private": False, "seconds": {"train_and_evaluate": 1.0},
                "summary": {"mean": mean, "epsilon_shared_max": None}})


@pytest.fixture
def results(tmp_path):
    _write(tmp_path)
    return aggregate(tmp_path, SUITE)


def test_best_non_collaborative_row_per_setting_and_metric(results):
    best = results["best_non_collaborative"]
    assert {k: v["best"] for k, v in best[S].items()} == {
        "accuracy": "local+public", "accuracy_cnn": "public-only", "bias_std": "public-only",
        "bias_gap": "local+public", "fid_minority": "local+public"}
    assert best[S]["accuracy"]["mean"] == pytest.approx(0.75)
    assert {v["best"] for v in best[T].values()} == {"t-local"}


def test_gains_against_the_best_row_are_paired_per_seed(results):
    rows = {r["name"]: r for r in results["rows"]}
    gain = rows["pfdm"]["vs_best_non_collaborative"]
    assert gain["accuracy_points"]["against"] == "local+public"
    assert gain["accuracy_points"]["mean"] == pytest.approx(7.5)  # (5 + 10) / 2
    assert gain["accuracy_points"]["std"] == pytest.approx(5 / 2 ** 0.5)
    assert gain["accuracy_cnn_points"]["mean"] == pytest.approx(7.5)  # (10 + 5) / 2 vs public-only
    assert gain["bias_std_percent"]["mean"] == pytest.approx(10.0)  # (-20 + 40) / 2 vs public-only
    assert gain["bias_gap_percent"]["mean"] == pytest.approx(15.0)  # (20 + 10) / 2 vs local+public
    assert gain["fid_minority_percent"]["mean"] == pytest.approx(-15.0)  # (-20 - 10) / 2
    # Against local as before, now with the CNN's accuracy too.
    assert rows["pfdm"]["vs_local"]["accuracy_points"]["mean"] == pytest.approx(27.5)
    assert rows["pfdm"]["vs_local"]["accuracy_cnn_points"]["mean"] == pytest.approx(37.5)
    assert rows["centralized"]["vs_best_non_collaborative"]["accuracy_points"]["mean"] == pytest.approx(24.0)
    t = rows["t-fedavg"]["vs_best_non_collaborative"]
    assert t["accuracy_points"]["against"] == "t-local" and t["accuracy_points"]["mean"] == pytest.approx(7.5)
    for name in ("local", "public-only", "local+public", "t-local"):
        assert "vs_best_non_collaborative" not in rows[name]


def test_tables_show_both_classifiers_and_name_the_best_row(results, tmp_path):
    rows = {r["name"]: r for r in results["rows"]}
    assert rows["local+public"]["metrics"]["accuracy_cnn"] == {"mean": None, "std": None, "n": 0}
    text = markdown_block(results, md_path=tmp_path / "RESULTS.md", figures={}, plot=None, commands=[])
    assert "| accuracy (logreg) | accuracy (CNN) |" in text
    line = next(x for x in text.splitlines() if x.startswith("| local+public | 2 |"))
    assert "| 0.750 ± 0.071 | n/a |" in line  # the missing CNN figure is n/a, not 0
    assert "### Against the best non-collaborative row (setting S)" in text
    assert ("| method | accuracy (logreg) change (points) vs `local+public` | accuracy (CNN) change "
            "(points) vs `public-only` | bias std change (%) vs `public-only` | bias gap change (%) vs "
            "`local+public` | minority FID change (%) vs `local+public` |") in text
    assert "| pfdm | 7.5 ± 3.5 | 7.5 ± 3.5 | 10.0 ± 42.4 | 15.0 ± 7.1 | -15.0 ± 7.1 |" in text
    assert "### Against the best non-collaborative row (setting T)" in text


def test_the_epsilon_plot_draws_cells_with_and_without_the_cnn(results, tmp_path):
    path = epsilon_plot(results, tmp_path / "plot.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
