"""`securediff experiment`: run the experiment suites of docs/RESULTS.md and
report them. The library is securediff.experiments; the shared-model audit
comes from audits.shared_mia."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonFlag, console, err_console, handle_errors, print_json

experiment_app = typer.Typer(
    help="Experiment suites: every (method, seed) cell a run directory; mean +- std over seeds.",
    no_args_is_help=True,
)


@experiment_app.command("run")
def run(
    out: Annotated[Path, typer.Option("--out", help="The suite's directory (resumable).")],
    suite: Annotated[str, typer.Option("--suite", help="core or extensions.")] = "core",
    quick: Annotated[bool, typer.Option(
        "--quick", help="TEST MODE: a tiny config and insecure seeds. NOT PRIVATE.")] = False,
    methods: Annotated[str | None, typer.Option(
        "--methods", help="Comma-separated method names (default: every method of the suite).")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Repetitions (default: the suite's).")] = None,
    device: Annotated[str, typer.Option("--device", help="Device of the audits: auto, cpu or cuda.")] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Run every (method, seed) cell not finished yet; a method whose strategy is not
    registered is reported as missing."""
    from audits.shared_mia import shared_model_mia
    from securediff.experiments.cells import describe, run_suite
    from securediff.experiments.suites import get_suite
    from securediff.rng import RandomSource

    with handle_errors():
        chosen_suite = get_suite(suite)
        names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
        chosen = chosen_suite.select(names)
        n_seeds = seeds or (1 if quick else chosen_suite.seeds)

        def audit(run_dir: Path) -> dict:
            # The auditor's randomness: the OS, or (quick) a recorded seed for reproducible tests.
            source = (RandomSource.insecure_from_seed(0) if quick else RandomSource.from_os())
            return shared_model_mia(run_dir, source=source.child(str(run_dir)), device=device)

        say = (lambda _msg: None) if as_json else (lambda msg: err_console.print(msg, highlight=False, soft_wrap=True))
        if quick and not as_json:
            err_console.print("[bold red]NOT PRIVATE[/]: --quick uses insecure test seeds and a tiny config")
        outcomes = run_suite(chosen_suite, root=out, methods=chosen, seeds=n_seeds, quick=quick,
                             audit=audit, say=say)
    if as_json:
        print_json({"suite": suite, "out": str(out), "private": not quick,
                    "cells": [{"method": o.method, "seed": o.seed, "status": o.status,
                               "reason": o.reason or None} for o in outcomes]})
        return
    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    missing = [o for o in outcomes if o.status == "missing"]
    console.print(f"{done} cell(s) run, {skipped} already finished, {len(missing)} method(s) missing"
                  + ("  [bold red](NOT PRIVATE)[/]" if quick else ""))
    for o in missing:
        console.print(describe(o), highlight=False, soft_wrap=True)


@experiment_app.command("report")
def report(
    root: Annotated[Path, typer.Argument(help="A suite directory made by `experiment run`.")],
    write: Annotated[Path | None, typer.Option("--write", help="Markdown file whose suite block to (re)write.")] = None,
    json_out: Annotated[Path | None, typer.Option("--results",
                                                  help="Results JSON to write.")] = None,
    figures: Annotated[Path | None, typer.Option(
        "--figures", help="Folder of the PNGs (default: the JSON's folder, else ROOT/figures).")] = None,
    block: Annotated[str | None, typer.Option(
        "--block", help="Name of the markdown block to (re)write (default: the suite's name); a directory "
                        "holding some of a suite's methods writes its own block.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Aggregate the cells: mean +- std over seeds, changes against local, missing rows."""
    from securediff.errors import ConfigError
    from securediff.experiments.report import write_report

    with handle_errors():
        if block is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", block):
            raise ConfigError(f"--block {block!r}: lower-case letters, digits and '-' only")
        results = write_report(root, markdown=write, json_path=json_out, figures=figures, block=block)
    if as_json:
        print_json(results)
        return
    from rich.table import Table

    from cli.render import fit

    table = Table(title=f"suite {results['suite']}" + ("" if results["private"] else " (NOT PRIVATE)"))
    for col in ("method", "seeds", "eps", "acc logreg", "acc CNN", "bias std", "FID minority", "MIA AUC"):
        table.add_column(col)
    for r in results["rows"]:
        m = r["metrics"]
        table.add_row(r["name"], str(len(r["seeds"])), *(_fmt(m[k]) for k in (
            "epsilon_claimed", "accuracy", "accuracy_cnn", "bias_std", "fid_minority", "mia_auc")))
    console.print(fit(table, 0))
    for miss in results["missing"]:
        console.print(f"{miss['method']}: MISSING: {miss['reason']}", highlight=False, soft_wrap=True)


def _fmt(m: dict) -> str:
    if m["mean"] is None:
        return "n/a"
    return f"{m['mean']:.3f}" + ("" if m["std"] is None else f" ± {m['std']:.3f}")
