"""`securediff`: the command line. Commands parse, call the library, render."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cli.audit import audit_app
from cli.common import EXIT_USAGE, JsonFlag, console, fail, handle_errors, print_json
from cli.config import config_app, refuse_twin_spellings
from cli.experiment import experiment_app
from cli.export import export_run
from cli.flower import flower_app
from cli.privacy import privacy_app
from cli.progress import RunProgress
from cli.render import partition_table, print_protocol_notice, print_result
from cli.report import report_run
from cli.tee import tee_app
from cli.transcript import transcript_app

app = typer.Typer(
    help="Federated training of personalized, differentially private diffusion models "
    "with blind aggregation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(privacy_app, name="privacy")
app.add_typer(transcript_app, name="transcript")
app.add_typer(audit_app, name="audit")
app.add_typer(tee_app, name="tee")
app.add_typer(flower_app, name="flower")
app.add_typer(experiment_app, name="experiment")
app.add_typer(config_app, name="config")


def _print_version(value: bool) -> None:
    if value:
        import securediff

        console.print(f"securediff {securediff.__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Federated training of personalized, differentially private diffusion models
    with blind aggregation."""
app.command("report")(report_run)
app.command("export")(export_run)

DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
InsecureOpt = Annotated[
    int | None,
    typer.Option("--insecure-deterministic", metavar="SEED",
                 help="TEST MODE: derive every random stream from SEED. The run is NOT PRIVATE."),
]

# The demo's fixed defaults (digits, 10 clients, Dirichlet alpha 1.0,
# partition seed 0, T=1000, pfdm at epsilon <= 10 by exact accounting, labels public).
DEMO_CONFIG = {
    "data": {"dataset": "digits", "num_clients": 10, "partition": "dirichlet", "alpha": 1.0, "partition_seed": 0},
    "diffusion": {"T": 1000},
    "federation": {"strategy": "pfdm", "protocol": "secagg"},
    "privacy": {"target_epsilon": 10.0, "accounting": "exact", "labels": "public"},
}


def _result_json(result) -> dict:
    return {"run_dir": str(result.run_dir), "summary": result.summary, "clients": result.clients,
            "privacy_statement": result.statement}


def _run(config, *, as_json: bool) -> None:
    from securediff.federation.setup import set_up_run
    from securediff.run import RunResult  # noqa: F401 (import cost paid once here)
    from securediff.run import train as train_run

    with handle_errors():
        if not as_json:
            setup = set_up_run(config)
            console.print(partition_table(setup.partition.summary_rows(setup.dataset.labels, setup.dataset.num_classes),
                                          setup.dataset.num_classes))
            console.print(f"t0 = {setup.t0}: forward-noise epsilon {setup.forward_epsilon_exact:.3f} (exact), "
                          f"{setup.forward_epsilon_classic:.3f} (classic) at delta {config.privacy.delta:g}"
                          + ("" if config.private else "  [bold red]NOT PRIVATE (insecure test mode)[/]"))
            # Before the rounds too: a long run, or one whose rounds abort, says it up front.
            print_protocol_notice(config.federation.protocol, dict(config.protocol))
        with RunProgress(num_clients=config.data.num_clients, enabled=not as_json) as progress:
            result = train_run(config, progress=progress)
    if as_json:
        print_json(_result_json(result))
    else:
        print_result(result)


def _config_flags_epilog() -> str:
    from securediff.config_help import flags_epilog

    return ("Config flags (every key of config.toml; `securediff config init` writes one with "
            "each key annotated):\n\n" + flags_epilog())


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             epilog=_config_flags_epilog())
def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="TOML config file.")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue an unfinished run directory.")] = None,
    device: DeviceOpt = "",
    protocol: Annotated[str, typer.Option("--protocol", help="Aggregation protocol: plain, secagg, ckks or tee (config key federation.protocol).")] = "",
    dropout_rate: Annotated[float | None, typer.Option(
        "--dropout-rate", help="Simulated dropout fraction per round, in [0, 1) (config key federation.dropout_rate).")] = None,
    insecure_deterministic: InsecureOpt = None,
    discard: Annotated[str | None, typer.Option(
        "--discard", metavar="NAME",
        help="Remove the unfinished run NAME (in --run.out_dir, default runs) after confirmation.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --discard without asking.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run federated training. Every config key is also a flag: --section.key VALUE
    (e.g. --data.alpha 0.1 --federation.rounds 5); unknown keys are rejected."""
    from securediff.config import parse_flag_overrides
    from securediff.run import load_config
    from securediff.run import resume as resume_run

    with handle_errors():
        if discard is not None:
            _discard(discard, list(ctx.args), yes=yes, as_json=as_json)
            return
        if resume is not None:
            overrides = parse_flag_overrides(list(ctx.args))
            how = overrides.pop("run", {})
            if config is not None or overrides or protocol or dropout_rate is not None \
                    or insecure_deterministic is not None:
                fail("--resume continues a run with its own config.toml; of the flags only "
                     "--device, --run.workers and --json may be given", EXIT_USAGE)
            if device:
                how["device"] = device
            with RunProgress(enabled=not as_json) as progress:
                result = resume_run(resume, progress=progress, how=how)
            print_json(_result_json(result)) if as_json else print_result(result)
            return
        overrides = parse_flag_overrides(list(ctx.args))
        refuse_twin_spellings(overrides)
        if device:
            overrides.setdefault("run", {})["device"] = device
        if protocol:
            overrides.setdefault("federation", {})["protocol"] = protocol
        if dropout_rate is not None:
            overrides.setdefault("federation", {})["dropout_rate"] = dropout_rate
        if insecure_deterministic is not None:
            overrides.setdefault("run", {})["insecure_seed"] = insecure_deterministic
        cfg = load_config(config, overrides)
    _run(cfg, as_json=as_json)


def _discard(name: str, args: list[str], *, yes: bool, as_json: bool) -> None:
    from securediff.config import parse_flag_overrides
    from securediff.runs_index import discard_unfinished

    overrides = parse_flag_overrides(args)
    if set(overrides) - {"run"} or set(overrides.get("run", {})) - {"out_dir"}:
        fail("--discard takes only --run.out_dir besides the run's name", EXIT_USAGE)
    out_dir = Path(overrides.get("run", {}).get("out_dir", "runs"))
    if not yes:
        try:
            yes = typer.confirm(f"remove the unfinished run {name} in {out_dir} and everything "
                                "in it?", default=False, err=True)
        except (typer.Abort, EOFError):  # no answer (stdin closed): not a yes
            yes = False
        if not yes:
            fail(f"{name} was not discarded: answer y, or give --yes", EXIT_USAGE)
    removed = discard_unfinished(out_dir, name)
    if as_json:
        print_json({"discarded": str(removed)})
    else:
        console.print(f"removed {removed}", soft_wrap=True, highlight=False)


@app.command()
def runs(
    out_dir: Annotated[Path, typer.Argument(help="Where runs are written (--run.out_dir).")] = Path("runs"),
    as_json: JsonFlag = False,
) -> None:
    """List the runs in OUT_DIR: running (with pid), unfinished, finished or corrupt, and epsilon."""
    from securediff.runs_index import list_runs

    with handle_errors():
        entries = list_runs(out_dir)
    if as_json:
        print_json({"runs": [e.to_dict() for e in entries]})
        return
    from cli.render import runs_table

    console.print(runs_table(entries))


@app.command()
def demo(
    device: DeviceOpt = "auto",
    out_dir: Annotated[Path, typer.Option("--run.out_dir", help="Where the run directory is written.")
                       ] = Path("runs"),
    as_json: JsonFlag = False,
) -> None:
    """The demo: 10 clients on the built-in digits, PFDM at epsilon <= 10, ending in a report."""
    from securediff.run import load_config

    overrides = {k: dict(v) for k, v in DEMO_CONFIG.items()}
    overrides["run"] = {"name": time.strftime("demo-%Y%m%d-%H%M%S"), "out_dir": str(out_dir), "device": device}
    with handle_errors():
        cfg = load_config(None, overrides)
    _run(cfg, as_json=as_json)


@app.command()
def sample(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    client: Annotated[str | None, typer.Option("--client", help="One client id (default: all).")] = None,
    per_class: Annotated[int, typer.Option("--per-class", min=1)] = 8,
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write (default RUN_DIR/sampled.png).")] = None,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Draw samples from a finished run's models and print their privacy statement."""
    from securediff.reopen import sample_run

    with handle_errors():
        written, statement = sample_run(run_dir, client=client, per_class=per_class, out=out, device=device)
    if as_json:
        print_json({"samples": str(written), "privacy_statement": statement})
        return
    from cli.render import statement_table

    console.print(f"samples written to [bold]{written}[/]")
    console.print(statement_table(statement))


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Re-sample and re-evaluate a finished run (metrics are printed, not overwritten)."""
    from securediff.reopen import evaluate_run

    with handle_errors():
        result = evaluate_run(run_dir, device=device)
    if as_json:
        print_json(result)
        return
    from cli.render import summary_table

    console.print(summary_table(result["clients"], result["summary"]))


def main() -> None:
    app()
