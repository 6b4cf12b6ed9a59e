"""From a suite's cell files to per-method mean +- std over seeds, paired
changes against `local` and against the best non-collaborative row of the
setting, and the rows that are missing (with why).

The best non-collaborative row is chosen per metric, among the rows of the
setting whose strategy rules say they are not collaborative (local,
public-only, local+public): the best mean over seeds, higher accuracy or lower
bias and FID; ties go to the row listed first in the suite. A collaborative
method's gain against it is paired per seed like the gain against `local`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from securediff.experiments.cells import CELL_FILE, read_suite
from securediff.experiments.suites import Method, Suite, unregistered_reason
from securediff.privacy.accountants import compose_epsilon
from securediff.privacy.ledger import PrivacyLedger
from securediff.storage import read_json

RESULTS_FORMAT = 1
# Summary means over a cell's clients (securediff.evaluation.summarize).
# accuracy: the logistic regression's; accuracy_cnn: the small CNN's (None in cells
# evaluated before it was reported).
CLIENT_MEANS = ("accuracy", "accuracy_cnn", "bias_std", "bias_gap", "fid_all", "fid_majority", "fid_minority")
# The paired changes: (metric, name of the change, higher is better). Accuracy changes
# in points, the others in percent of the baseline's value.
CHANGES = (("accuracy", "accuracy_points", True), ("accuracy_cnn", "accuracy_cnn_points", True),
           ("bias_std", "bias_std_percent", False), ("bias_gap", "bias_gap_percent", False),
           ("fid_minority", "fid_minority_percent", False))


def load_cells(root: Path) -> list[dict[str, Any]]:
    """Every finished cell; a cell whose run no longer matches its manifest is refused
    (CheckpointError naming the file) before anything is reported."""
    from securediff.reopen import check_finished

    cells = [read_json(p) for p in sorted(Path(root).glob(f"cells/*/seed-*/{CELL_FILE}"))]
    for cell in cells:
        if cell.get("run_dir"):
            check_finished(Path(root) / str(cell["run_dir"]))
        cell["relation"], cell["epsilon_replace_one"] = shared_relation_and_replace_one(root, cell)
    return cells


def shared_relation_and_replace_one(root: Path, cell: dict[str, Any]) -> tuple[str | None, float | None]:
    """The neighbouring relation of the shared artefact's claim, and its epsilon under
    replace-one (max over clients), recomputed from the run's ledgers. PFDM's forward
    noise is replace-one; distributed DP-SGD alone is add/remove: the two claims are
    only comparable once both are stated under the same relation."""
    path = Path(root) / str(cell.get("run_dir", "")) / "ledger.json"
    if not path.is_file():
        return None, None
    ledgers = [PrivacyLedger.from_dict(d) for d in read_json(path).values()]
    shared = [[e for e in led.events if e.artefact == "shared"] for led in ledgers]
    if not any(shared):
        return None, None
    relation = "replace-one" if any(e.relation == "replace_one" for evs in shared for e in evs) else "add/remove"
    eps = max(compose_epsilon(evs, delta=led.delta, accountant=led.accountant, relation="replace_one")
              for led, evs in zip(ledgers, shared, strict=True) if evs)
    return relation, eps


def cell_values(cell: dict[str, Any]) -> dict[str, float | None]:
    """The numbers a table shows for one cell."""
    mean = cell["summary"]["mean"]
    mia = cell.get("mia_shared") or {}
    forward = cell.get("forward_epsilon") or {}
    secs = cell.get("seconds", {})
    return {
        **{k: mean.get(k) for k in CLIENT_MEANS},
        "epsilon_claimed": cell["summary"].get("epsilon_shared_max"),
        "epsilon_replace_one": cell.get("epsilon_replace_one"),
        "t0": forward.get("t0"),
        "forward_epsilon_exact": forward.get("exact"),
        "forward_epsilon_classic": forward.get("classic"),
        "mia_auc": mia.get("auc"),
        "mia_audit_ceiling": mia.get("ceiling"),
        "mia_dp_auc_ceiling": mia.get("dp_auc_ceiling"),
        "seconds": (secs.get("train_and_evaluate") or 0.0) + (secs.get("audit") or 0.0),
    }


def mean_std(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation (ddof 1) of the defined values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(xs)), "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else None,
            "n": len(xs)}


def _local_of(method: Method, suite: Suite) -> Method | None:
    for m in suite.methods:
        if m.rules is not None and m.rules.no_collaboration_baseline and m.setting == method.setting:
            return m
    return None


def _change(a: float | None, b: float | None, points: bool) -> float | None:
    if a is None or b is None:
        return None
    if points:
        return 100.0 * (a - b)
    return 100.0 * (a - b) / b if b else None


def _paired_changes(cells: dict[int, dict], baseline: dict[int, dict],
                    metrics: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Per seed against the baseline on the same partition, then mean +- std over seeds."""
    out = {}
    for key, name, higher in CHANGES:
        if metrics is not None and key not in metrics:
            continue
        values = []
        for seed, cell in cells.items():
            if seed in baseline:
                values.append(_change(cell_values(cell)[key], cell_values(baseline[seed])[key], points=higher))
        out[name] = mean_std(values)
    return out


def best_non_collaborative(rows: list[dict[str, Any]], suite: Suite) -> dict[str, dict[str, Any]]:
    """Per setting and metric: the non-collaborative row with the best mean over seeds
    (`best` None where no such row has the metric)."""
    rules = {m.name: m.rules for m in suite.methods}
    out: dict[str, dict[str, Any]] = {}
    for setting in dict.fromkeys(r["setting"] for r in rows):
        candidates = [r for r in rows if r["setting"] == setting and rules.get(r["name"]) is not None
                      and not rules[r["name"]].collaborative]
        if not candidates:
            continue
        out[setting] = {}
        for key, _, higher in CHANGES:
            defined = [r for r in candidates if r["metrics"][key]["mean"] is not None]
            sign = -1.0 if higher else 1.0
            best = min(defined, key=lambda r: sign * r["metrics"][key]["mean"], default=None)
            out[setting][key] = {"best": None if best is None else best["name"],
                                 "mean": None if best is None else best["metrics"][key]["mean"]}
    return out


def aggregate(root: Path, suite: Suite) -> dict[str, Any]:
    meta = read_suite(root)
    by_method: dict[str, dict[int, dict]] = {}
    for cell in load_cells(root):
        by_method.setdefault(cell["method"], {})[int(cell["seed"])] = cell
    rows, missing = [], []
    for method in suite.methods:
        cells = by_method.get(method.name, {})
        reason = unregistered_reason(method)
        if not cells:
            missing.append({"method": method.name, "strategy": method.strategy,
                            "reason": reason or f"no finished cell in {root} (not run yet)"})
            continue
        values = [cell_values(c) for c in cells.values()]
        row: dict[str, Any] = {
            **method.to_dict(), "seeds": sorted(cells),
            "metrics": {k: mean_std([v[k] for v in values]) for k in values[0]},
            "private": all(c["private"] for c in cells.values()),
            "relation": next((c["relation"] for c in cells.values() if c.get("relation")), None),
            "mia_attack": "loss",
        }
        local = _local_of(method, suite)
        if local is not None and local.name != method.name and local.name in by_method:
            row["vs_local"] = {"local": local.name, **_paired_changes(cells, by_method[local.name])}
        rows.append(row)
    best = best_non_collaborative(rows, suite)
    for row in rows:
        rules = suite.method(row["name"]).rules
        if rules is None or not rules.collaborative or row["setting"] not in best:
            continue
        row["vs_best_non_collaborative"] = {}
        for key, name, _ in CHANGES:
            against = best[row["setting"]][key]["best"]
            change = (_paired_changes(by_method[row["name"]], by_method[against], (key,))[name]
                      if against is not None else mean_std([]))
            row["vs_best_non_collaborative"][name] = {"against": against, **change}
    seconds = sum(cell_values(c)["seconds"] for cells in by_method.values() for c in cells.values())
    invocations = meta.get("invocations", [])
    return {
        "format": RESULTS_FORMAT, "suite": suite.name, "description": suite.description,
        "quick": meta["quick"], "private": not meta["quick"], "seeds": meta["seeds"],
        "hyperparameters": meta.get("base", {}),
        "methods_table": [m.to_dict() for m in suite.methods],
        "rows": rows, "missing": missing, "best_non_collaborative": best,
        "cells_finished": sum(len(c) for c in by_method.values()),
        "cells_expected": int(meta["seeds"]) * sum(unregistered_reason(m) is None for m in suite.methods),
        "wall_seconds": {"cells_total": seconds,
                         "invocations_total": sum(i.get("seconds", 0.0) for i in invocations),
                         "invocations": invocations},
    }
