"""`securediff audit`: membership-inference audits of a finished run, and the
self-check that the audits catch deliberately broken DP mechanisms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import EXIT_CHECK_FAILED, JsonFlag, console, err_console, handle_errors, print_json
from cli.render import fit

audit_app = typer.Typer(
    help="Privacy audits: attack a finished run; check that the audits catch broken DP.",
    no_args_is_help=True,
)

SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", help="Derive the auditor's randomness from SEED (reproducible); "
                 "default: from the OS."),
]
ConfidenceOpt = Annotated[float, typer.Option("--confidence", help="Confidence of every bound.")]


def _source(seed: int | None):
    from securediff.rng import RandomSource

    return RandomSource.from_os() if seed is None else RandomSource.insecure_from_seed(seed)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _styled(verdict: str) -> str:
    style = {"violation": "bold red", "consistent": "green", "uninformative": "yellow",
             "measurement": "dim"}.get(verdict)
    return f"[{style}]{verdict}[/]" if style else verdict


def _run_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"Audit of {result['run_dir']}: verdict {result['verdict']}")
    for col in ("target", "attack", "AUC", "TPR@1%", "TPR@0.1%", "eps lower", "ceiling",
                "claimed", "verdict"):
        table.add_column(col, justify="left" if col in ("target", "attack", "verdict") else "right")
    for t in result["targets"]:
        for a in t["attacks"]:
            table.add_row(t["target"], a["attack"], _fmt(a["auc"]), _fmt(a["tpr_at_fpr"]["0.01"]),
                          _fmt(a["tpr_at_fpr"]["0.001"]), _fmt(a["epsilon_lower_bound"]),
                          _fmt(a["ceiling"]), _fmt(a["epsilon_claimed"]),
                          _styled(a["verdict"]))
    return fit(table, 0, 1)


@audit_app.command("run")
def run(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    attack: Annotated[list[str] | None, typer.Option(
        "--attack", help="Attack to run (repeatable): loss, secmi, pia, lira-offline, "
        "lira-online, memorization. Default: all.")] = None,
    targets: Annotated[str, typer.Option("--targets", help="all, shared or personal.")] = "all",
    clients: Annotated[str | None, typer.Option(
        "--clients", help="Comma-separated client ids to audit (default: all).")] = None,
    shadows: Annotated[int, typer.Option("--shadows", help="LiRA shadow models (even).")] = 4,
    shadow_steps: Annotated[int, typer.Option("--shadow-steps", help="Steps per shadow.")] = 200,
    samples_per_class: Annotated[int, typer.Option(
        "--samples-per-class", help="Released samples per class for memorization.")] = 10,
    confidence: ConfidenceOpt = 0.95,
    seed: SeedOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Attack a finished run; write RUN_DIR/audit/ (JSON, Markdown, ROC). Exit 1 on a violation."""
    from audits.attacks import ATTACKS
    from audits.report import write_report
    from audits.runs import AuditOptions, audit_run
    from securediff.locks import writing

    with handle_errors():
        options = AuditOptions(
            attacks=tuple(attack) if attack else ATTACKS, targets=targets,
            clients=tuple(c.strip() for c in clients.split(",") if c.strip()) if clients else None,
            shadows=shadows, shadow_steps=shadow_steps, samples_per_class=samples_per_class,
            confidence=confidence, device=device,
        )
        say = None if as_json else (lambda msg: err_console.print(f"[dim]audit: {msg}[/]"))
        with writing(run_dir):  # one writer of RUN_DIR/audit/ at a time
            result, reports = audit_run(run_dir, options=options, source=_source(seed), progress=say)
            paths = write_report(run_dir, result, reports)
    if as_json:
        print_json(result)
    else:
        console.print(_run_table(result))
        console.print("written: " + ", ".join(str(p) for p in paths.values()))
    if result["verdict"] == "violation":
        raise typer.Exit(EXIT_CHECK_FAILED)


def _selfcheck_table(report: dict[str, Any]) -> Table:
    table = Table(title="Audit self-check: " + ("PASSED" if report["passed"] else "FAILED"))
    for col in ("mechanism", "defect", "audit", "claimed", "eps lower", "ceiling", "conf",
                "verdict", "ok"):
        table.add_column(col)
    for c in report["checks"]:
        ok = {True: "[green]yes[/]", False: "[bold red]NO[/]", None: "[dim]info[/]"}[c["ok"]]
        table.add_row(c["mechanism"], c["defect"], c["audit"], _fmt(c["epsilon_claimed"]),
                      _fmt(c["epsilon_lower_bound"]), _fmt(c["ceiling"]), _fmt(c["confidence"]),
                      _styled(c["verdict"]), ok)
    return fit(table, 0)


@audit_app.command("selfcheck")
def selfcheck(
    trials: Annotated[int, typer.Option("--trials", help="Forward-noise trial pairs.")] = 10_000_000,
    canaries: Annotated[int, typer.Option("--canaries", help="One-run (DP-SGD) canaries.")] = 30_000,
    dpsgd_steps: Annotated[int, typer.Option("--dpsgd-steps", help="DP-SGD steps.")] = 4,
    blackbox_canaries: Annotated[int, typer.Option(
        "--blackbox-canaries", help="Black-box canaries (0 skips those rows).")] = 1_000,
    defect: Annotated[list[str] | None, typer.Option(
        "--defect", help="Audit only this broken mechanism (repeatable); default: all.")] = None,
    epsilon: Annotated[float, typer.Option("--epsilon", help="Claimed epsilon.")] = 4.0,
    delta: Annotated[float, typer.Option("--delta", help="Claimed delta.")] = 1e-5,
    confidence: ConfidenceOpt = 0.95,
    seed: SeedOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Audit correct and deliberately broken mechanisms; exit 1 unless every broken one is
    flagged and no correct one is."""
    from audits.selfcheck import SelfCheckConfig, run_selfcheck

    with handle_errors():
        config = SelfCheckConfig(claimed_epsilon=epsilon, delta=delta, confidence=confidence,
                                 forward_trials=trials, canaries=canaries, dpsgd_steps=dpsgd_steps,
                                 blackbox_canaries=blackbox_canaries,
                                 defects=tuple(defect) if defect else None)
        say = None if as_json else (lambda msg: err_console.print(f"[dim]selfcheck: {msg}[/]"))
        report = run_selfcheck(config=config, source=_source(seed), progress=say).to_dict()
    if as_json:
        from audits.runs import jsonable

        print_json(jsonable(report))
    else:
        console.print(_selfcheck_table(report))
        if not report["meets_minimums"]:
            console.print("[yellow]below the acceptance sizes (1e7 trial pairs, 1,000 canaries)[/]")
        console.print(f"{report['seconds']:.0f} s")
    if not report["passed"]:
        raise typer.Exit(EXIT_CHECK_FAILED)


@audit_app.command("client-level")
def client_level(
    epsilon: Annotated[float, typer.Option("--epsilon", help="Client-level epsilon the noise is "
                                           "calibrated to over the rounds.")] = 8.0,
    mechanism: Annotated[str, typer.Option("--mechanism", help="gaussian or skellam.")] = "gaussian",
    canaries: Annotated[int, typer.Option("--canaries", help="Canary clients inserted.")] = 200,
    canaries_out: Annotated[int, typer.Option("--canaries-out", help="Canaries never inserted.")] = 2000,
    dim: Annotated[int, typer.Option("--dim", help="Parameters of the model.")] = 8192,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds (every client in each).")] = 5,
    real_clients: Annotated[int, typer.Option("--real-clients", help="Real clients.")] = 10,
    protocol: Annotated[str, typer.Option("--protocol", help="Aggregation protocol.")] = "secagg",
    no_noise: Annotated[bool, typer.Option("--no-noise", help="The control: noise off.")] = False,
    seed: SeedOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """One-shot client-level estimate (Andrew et al. 2024) of a client-level DP run with
    canary clients through secure aggregation: an estimate, not a lower bound."""
    import numpy as np

    from audits.client_level import audit_synthetic_run

    with handle_errors():
        generator = np.random.default_rng(seed)
        result = audit_synthetic_run(
            mechanism=mechanism, client_epsilon=None if no_noise else epsilon, canaries=canaries,
            canaries_out=canaries_out, dim=dim, rounds=rounds, real_clients=real_clients, protocol=protocol,
            generator=generator, source=_source(seed)).to_dict()
    if as_json:
        print_json(result)
        return
    claim = "noise off" if result["claimed"] is None else f"claimed {result['claimed']:.3f}"
    console.print(f"client-level estimate {result['estimate']:.3f} ({claim}; mu {result['mu']:.3f}; "
                  f"{result['canaries_in']} canaries in, {result['canaries_out']} out, {result['rounds']} "
                  f"rounds through {result['protocol']}): {result['kind']}")
