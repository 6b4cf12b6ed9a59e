"""Run a suite's cells: one (method, seed) at a time, each a normal run
directory plus `cell.json`, written atomically once everything else is done.

Layout under the suite's directory DIR:

    DIR/suite.json                      what the suite is (name, quick, seeds) and each invocation
    DIR/cells/METHOD/seed-N/run/        the run directory (run.incomplete/ while training)
    DIR/cells/METHOD/seed-N/cell.json   the cell's result; its presence means "finished"

Resuming: a cell with `cell.json` is skipped. A cell without it is redone from
where it stopped: an unfinished run is continued with `securediff.run.resume`
(the noised data are reused, never redrawn), a finished run is audited and
summarised again.

Seeds: repetition N uses partition seed N for every method, so the methods see
the same clients within a seed (paired comparisons). Private cells draw their
training and DP noise from the OS; only --quick derives them from seed N (insecure
test mode, NOT PRIVATE).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securediff.errors import ConfigError
from securediff.experiments.suites import (
    QUICK_BASE,
    Method,
    Overrides,
    Suite,
    merge,
    unregistered_reason,
)
from securediff.storage import INCOMPLETE_SUFFIX, atomic_write_json, read_json

CELL_FORMAT = 1
SUITE_FILE = "suite.json"
CELL_FILE = "cell.json"
RUN_NAME = "run"

# The membership-inference audit of a finished run's shared denoiser (injected by
# the caller: securediff does not import audits). Returns a JSON-ready dict.
SharedAudit = Callable[[Path], dict[str, Any]]
Say = Callable[[str], None]


@dataclass(frozen=True)
class CellOutcome:
    method: str
    seed: int
    status: str  # "done" (run now), "skipped" (already finished), "missing" (cannot run)
    reason: str = ""
    result: dict[str, Any] | None = None


def cell_dir(root: Path, method: str, seed: int) -> Path:
    return Path(root) / "cells" / method / f"seed-{seed}"


def cell_overrides(suite: Suite, method: Method, *, seed: int, quick: bool, out_dir: Path) -> Overrides:
    """The full set of config overrides of one cell."""
    run: dict[str, Any] = {"name": RUN_NAME, "out_dir": str(out_dir)}
    if quick:
        run["insecure_seed"] = seed
    # --quick shrinks every method alike, so its sizes come after the method's own.
    return merge(suite.base, method.overrides, QUICK_BASE if quick else {},
                 {"federation": {"strategy": method.strategy}, "data": {"partition_seed": seed},
                  "run": run})


def open_suite_dir(root: Path, suite: Suite, *, quick: bool, seeds: int) -> dict[str, Any]:
    """Create DIR/suite.json, or check that DIR holds the same suite in the same mode."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--out {root} exists and is not a directory")
    path = root / SUITE_FILE
    if path.exists():
        meta = read_suite(root)
        if meta["suite"] != suite.name or meta["quick"] != quick:
            raise ConfigError(
                f"{root} holds suite {meta['suite']!r} (quick={meta['quick']}); "
                f"use another --out for suite {suite.name!r} (quick={quick})")
        meta["seeds"] = max(int(meta["seeds"]), seeds)
    else:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --out {root}: {exc.strerror}") from None
        meta = {"format": CELL_FORMAT, "suite": suite.name, "quick": quick, "private": not quick,
                "seeds": seeds, "invocations": []}
    meta["description"] = suite.description
    meta["base"] = merge(suite.base, QUICK_BASE if quick else {})
    meta["methods"] = [m.to_dict() for m in suite.methods]
    atomic_write_json(path, meta)
    return meta


def read_suite(root: Path) -> dict[str, Any]:
    path = Path(root) / SUITE_FILE
    if not Path(root).is_dir():
        raise ConfigError(f"{root} is not a directory")
    try:
        meta = read_json(path)
    except Exception as exc:  # noqa: BLE001 (any unreadable file is the same bad input)
        raise ConfigError(f"cannot read {path}: is {root} a directory made by "
                          f"`securediff experiment run`? ({exc})") from None
    if not isinstance(meta, dict) or not {"suite", "quick", "seeds"} <= set(meta):
        raise ConfigError(f"{path} is not a suite file")
    return meta


def run_cell(suite: Suite, method: Method, *, seed: int, root: Path, quick: bool,
             audit: SharedAudit | None, say: Say) -> CellOutcome:
    reason = unregistered_reason(method)
    if reason:
        return CellOutcome(method.name, seed, "missing", reason)
    here = cell_dir(root, method.name, seed)
    if (here / CELL_FILE).is_file():
        return CellOutcome(method.name, seed, "skipped", result=read_json(here / CELL_FILE))
    from securediff.run import load_config, resume, train

    started = time.perf_counter()
    run_dir = here / RUN_NAME
    unfinished = here / (RUN_NAME + INCOMPLETE_SUFFIX)
    if run_dir.is_dir():
        how = "finished run reused"
        summary = read_json(run_dir / "metrics.json")
    elif unfinished.is_dir():
        say(f"{method.name} seed {seed}: continuing {unfinished}")
        how = "resumed"
        summary = _metrics(resume(unfinished).run_dir)
    else:
        how = "trained"
        config = load_config(None, cell_overrides(suite, method, seed=seed, quick=quick, out_dir=here))
        summary = _metrics(train(config).run_dir)
    trained = time.perf_counter()
    shared_audit = audit(run_dir) if audit is not None else {"auc": None, "reason": "audit not run"}
    result = {
        "format": CELL_FORMAT, "suite": suite.name, "method": method.name, "seed": seed,
        "strategy": method.strategy, "accounting": method.accounting,
        "epsilon_nominal": method.epsilon, "setting": method.setting, "quick": quick,
        "private": summary["summary"]["private"], "how": how,
        "run_dir": str(run_dir.relative_to(root)),
        "summary": {k: v for k, v in summary["summary"].items() if k != "rounds"},
        "clients": summary["clients"],
        "forward_epsilon": _forward_epsilons(run_dir) if method.rules.forward_noise else None,
        "mia_shared": shared_audit,
        "seconds": {"train_and_evaluate": trained - started, "audit": time.perf_counter() - trained,
                    "run_reported": summary["summary"].get("seconds")},
    }
    atomic_write_json(here / CELL_FILE, result)
    return CellOutcome(method.name, seed, "done", result=result)


def _metrics(run_dir: Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / "metrics.json")


def _forward_epsilons(run_dir: Path) -> dict[str, Any]:
    """PFDM's t0 and its forward-noise epsilon by both bounds (exact and the paper's classic)."""
    from securediff.config import from_dict, load_toml
    from securediff.diffusion.schedule import make_schedule
    from securediff.privacy.forward import epsilon_classic, epsilon_exact, forward_sigma

    cfg = from_dict(load_toml(run_dir / "config.toml"))
    t0 = int(read_json(run_dir / "metrics.json")["summary"]["t0"])
    d, p = cfg.diffusion, cfg.privacy
    abar = make_schedule(d.schedule, T=d.T, beta_start=d.beta_start, beta_end=d.beta_end).abar
    sigma = forward_sigma(float(abar[t0]))
    return {"t0": t0, "clip_norm": p.clip_norm, "delta": p.delta,
            "exact": epsilon_exact(sigma=sigma, clip_norm=p.clip_norm, delta=p.delta),
            "classic": epsilon_classic(sigma=sigma, clip_norm=p.clip_norm, delta=p.delta)}


def run_suite(suite: Suite, *, root: Path, methods: tuple[Method, ...], seeds: int, quick: bool,
              audit: SharedAudit | None, say: Say) -> list[CellOutcome]:
    """Every (method, seed) cell, seed by seed; returns what happened to each."""
    open_suite_dir(root, suite, quick=quick, seeds=seeds)
    started, wall = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    outcomes: list[CellOutcome] = []
    runnable = []
    for method in methods:
        reason = unregistered_reason(method)
        if reason:  # the same reason holds for every seed
            outcomes.append(CellOutcome(method.name, 0, "missing", reason))
            say(describe(outcomes[-1]))
        else:
            runnable.append(method)
    # Seed by seed, so that a cut suite leaves whole seeds of paired comparisons.
    # One intra-op thread outside the runner's client workers (which set their own):
    # on the shared 2 cores, evaluation sampling on two threads collapsed while another
    # process ran (a local cell spent 290 s outside its 154 s of training rounds).
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed in range(seeds):
            for method in runnable:
                outcome = run_cell(suite, method, seed=seed, root=root, quick=quick, audit=audit, say=say)
                outcomes.append(outcome)
                say(describe(outcome))
    finally:
        torch.set_num_threads(saved)
    meta = read_suite(root)
    meta.setdefault("invocations", []).append({
        "started": started, "seconds": time.perf_counter() - wall,
        "methods": [m.name for m in methods], "seeds": seeds,
        "cells_run": sum(o.status == "done" for o in outcomes)})
    atomic_write_json(Path(root) / SUITE_FILE, meta)
    return outcomes


def describe(outcome: CellOutcome) -> str:
    head = f"{outcome.method} seed {outcome.seed}"
    if outcome.status == "missing":
        return f"{outcome.method}: MISSING: {outcome.reason}"
    r = outcome.result or {}
    mean = r.get("summary", {}).get("mean", {})
    secs = r.get("seconds", {})
    took = sum(v for k, v in secs.items() if k != "run_reported" and v is not None)
    what = "already finished" if outcome.status == "skipped" else f"{r.get('how')} in {took:.0f} s"
    return (f"{head}: {what}; accuracy {_fmt(mean.get('accuracy'))} (logreg), "
            f"{_fmt(mean.get('accuracy_cnn'))} (CNN), minority FID "
            f"{_fmt(mean.get('fid_minority'))}, shared-model MIA AUC {_fmt(r.get('mia_shared', {}).get('auc'))}")


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"
