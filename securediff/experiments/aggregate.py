"""From a suite's cell files to per-method mean +- std over seeds, paired
changes against `local`, and the rows that are missing (with why)."""

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
CLIENT_MEANS = ("accuracy", "bias_std", "bias_gap", "fid_all", "fid_majority", "fid_minority")


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


def _paired_changes(cells: dict[int, dict], local: dict[int, dict]) -> dict[str, Any]:
    """Per seed against local on the same partition, then mean +- std over seeds."""
    acc, bias, gap, fid = [], [], [], []
    for seed, cell in cells.items():
        if seed not in local:
            continue
        a, b = cell_values(cell), cell_values(local[seed])
        if a["accuracy"] is not None and b["accuracy"] is not None:
            acc.append(100.0 * (a["accuracy"] - b["accuracy"]))
        for out, key in ((bias, "bias_std"), (gap, "bias_gap"), (fid, "fid_minority")):
            if a[key] is not None and b[key]:
                out.append(100.0 * (a[key] - b[key]) / b[key])
    return {"accuracy_points": mean_std(acc), "bias_std_percent": mean_std(bias),
            "bias_gap_percent": mean_std(gap), "fid_minority_percent": mean_std(fid)}


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
    seconds = sum(cell_values(c)["seconds"] for cells in by_method.values() for c in cells.values())
    invocations = meta.get("invocations", [])
    return {
        "format": RESULTS_FORMAT, "suite": suite.name, "description": suite.description,
        "quick": meta["quick"], "private": not meta["quick"], "seeds": meta["seeds"],
        "hyperparameters": meta.get("base", {}),
        "methods_table": [m.to_dict() for m in suite.methods],
        "rows": rows, "missing": missing,
        "cells_finished": sum(len(c) for c in by_method.values()),
        "cells_expected": int(meta["seeds"]) * sum(unregistered_reason(m) is None for m in suite.methods),
        "wall_seconds": {"cells_total": seconds,
                         "invocations_total": sum(i.get("seconds", 0.0) for i in invocations),
                         "invocations": invocations},
    }
