"""`securediff privacy`: epsilon of the forward-noise mechanism, of DP-SGD, and
of a run's ledgers, recomputed by every accountant."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import JsonFlag, console, handle_errors, print_json
from cli.render import fit
from securediff.errors import CheckpointError, ConfigError

privacy_app = typer.Typer(
    help="Privacy accounting: forward noise, DP-SGD, and the ledgers of a run.",
    no_args_is_help=True,
)

Delta = Annotated[float, typer.Option("--delta", help="Target delta.")]


def _jsonable(value: Any) -> Any:
    """JSON has no infinity: write non-finite floats as strings."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _render(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("quantity", style="bold")
    table.add_column("value", justify="right")
    for key, value in rows.items():
        table.add_row(key, _fmt(value))
    console.print(table)


@privacy_app.command("forward")
def forward(
    t0: Annotated[int | None, typer.Option("--t0", help="Forward-noise step.")] = None,
    target_epsilon: Annotated[
        float | None, typer.Option("--target-epsilon", help="Calibrate t0 to this epsilon.")
    ] = None,
    clip: Annotated[float, typer.Option("--clip", help="Per-image L2 clip norm C.")] = 10.0,
    delta: Delta = 1e-5,
    num_steps: Annotated[int, typer.Option("--T", help="Diffusion steps T.")] = 1000,
    beta_start: Annotated[float, typer.Option("--beta-start")] = 1e-4,
    beta_end: Annotated[float, typer.Option("--beta-end")] = 0.02,
    schedule: Annotated[str, typer.Option("--schedule", help="linear or cosine.")] = "linear",
    method: Annotated[
        str, typer.Option("--method", help="Bound used to calibrate t0: exact or classic.")
    ] = "exact",
    json_out: JsonFlag = False,
) -> None:
    """Epsilon of clipping to C and noising once to t0 (replace-one, sensitivity 2C)."""
    from securediff.diffusion.schedule import make_schedule
    from securediff.privacy.forward import (
        calibrate_t0,
        epsilon_classic,
        epsilon_exact,
        forward_sigma,
    )

    with handle_errors():
        if (t0 is None) == (target_epsilon is None):
            raise ConfigError("give exactly one of --t0 and --target-epsilon")
        if not 0.0 < delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {delta}")
        abar = make_schedule(schedule, T=num_steps, beta_start=beta_start, beta_end=beta_end).abar
        out: dict[str, Any] = {}
        if target_epsilon is not None:
            t0 = calibrate_t0(
                target_epsilon=target_epsilon, clip_norm=clip, delta=delta, abar=abar, method=method
            )
            out.update(target_epsilon=target_epsilon, method=method)
        if t0 is None or not 1 <= t0 <= num_steps:
            raise ConfigError(f"t0 must be in 1..{num_steps}, got {t0}")
        sigma = forward_sigma(abar[t0])
        out.update(
            t0=t0,
            abar_t0=float(abar[t0]),
            sigma=sigma,
            clip_norm=clip,
            sensitivity=2.0 * clip,
            delta=delta,
            epsilon_classic=epsilon_classic(sigma=sigma, clip_norm=clip, delta=delta),
            epsilon_exact=epsilon_exact(sigma=sigma, clip_norm=clip, delta=delta),
            relation="replace_one",
            schedule=schedule,
            T=num_steps,
            beta_start=beta_start,
            beta_end=beta_end,
        )
    if json_out:
        print_json(_jsonable(out))
    else:
        _render("forward-noise mechanism", out)


MAX_ACCOUNTED_STEPS = 100_000_000


@privacy_app.command("epsilon")
def epsilon(
    noise_multiplier: Annotated[float, typer.Option("--noise-multiplier")],
    sample_rate: Annotated[float, typer.Option("--sample-rate")],
    steps: Annotated[int, typer.Option("--steps")],
    delta: Delta = 1e-5,
    accountant: Annotated[
        str, typer.Option("--accountant", help="pld, prv or rdp (exact: only at --sample-rate 1).")
    ] = "pld",
    json_out: JsonFlag = False,
) -> None:
    """Epsilon (add/remove) of DP-SGD: Poisson-subsampled Gaussian steps."""
    from securediff.privacy.accountants import AccountantUnsupportedError, dpsgd_epsilon

    with handle_errors():
        if not 1 <= steps <= MAX_ACCOUNTED_STEPS:
            # The PLD accountant's memory grows with the steps: 1e8 takes ~0.8 GB and
            # 18 s here, 1e9 ~3 GB and 90 s, 1e12 would ask for hundreds of GB.
            raise ConfigError(f"--steps must be in 1..{MAX_ACCOUNTED_STEPS:,} (more steps than a "
                              f"run takes, and beyond what the accountant can hold), got {steps:,}")
        try:
            eps = dpsgd_epsilon(
                noise_multiplier=noise_multiplier,
                sample_rate=sample_rate,
                steps=steps,
                delta=delta,
                accountant=accountant,
            )
        except AccountantUnsupportedError as exc:  # a bad choice of flag, not a failed run
            raise ConfigError(str(exc)) from None
    out = {
        "epsilon": eps,
        "delta": delta,
        "accountant": accountant,
        "noise_multiplier": noise_multiplier,
        "sample_rate": sample_rate,
        "steps": steps,
        "relation": "add_remove",
    }
    if json_out:
        print_json(_jsonable(out))
    else:
        _render("DP-SGD", out)


def _load_ledgers(run_dir: Path) -> dict[str, Any]:
    from securediff.privacy.ledger import PrivacyLedger
    from securediff.reopen import check_manifest

    path = run_dir / "ledger.json"
    if (run_dir / "manifest.json").is_file() and not run_dir.name.endswith(".incomplete"):
        # A finished run: its ledger is reported only if it is the one the run ended
        # with (an edited sigma would otherwise print a smaller epsilon).
        check_manifest(run_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected an object mapping client id to ledger")
    ledgers = {}
    for client_id, entry in data.items():
        ledger = PrivacyLedger.from_dict(entry)
        if ledger.client_id != client_id:
            raise CheckpointError(f"{path}: entry {client_id!r} holds client {ledger.client_id!r}")
        ledgers[client_id] = ledger
    return ledgers


def _split(ledgers: dict[str, Any]) -> dict[str, Any]:
    """Per client and artefact: each mechanism's epsilon on its own."""
    from securediff.privacy.adaptive import mechanism_split

    out: dict[str, Any] = {}
    for cid, led in sorted(ledgers.items()):
        by_artefact = {}
        for artefact in ("shared", "personal"):
            events = [e for e in led.events if e.artefact == artefact]
            if events:
                by_artefact[artefact] = mechanism_split(events, delta=led.delta,
                                                        accountant=led.accountant)
        out[cid] = by_artefact
    return out


def _split_table(split: dict[str, Any]) -> Table:
    table = Table(title="where the budget goes: each mechanism on its own "
                  "(composition is sub-additive; the claim above composes them, except that "
                  "DP-SGD on PFDM's noised data is a second view and the smaller one counts)")
    for col in ("client", "artefact", "mechanism", "steps", "epsilon alone"):
        table.add_column(col, justify="right" if col in ("steps", "epsilon alone") else "left")
    for cid, by_artefact in split.items():
        for artefact, rows in by_artefact.items():
            for row in rows:
                table.add_row(cid, artefact, row["mechanism"], str(row["steps"]), _fmt(row["epsilon"]))
                for name, part in row.get("parts", {}).items():
                    table.add_row("", "", f"  {name} (z = {part['noise_multiplier']:.4g})", "",
                                  _fmt(part["epsilon"]))
    return fit(table, 0)


@privacy_app.command("ledger")
def ledger(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding ledger.json.")],
    split: Annotated[bool, typer.Option(
        "--split", help="Also each mechanism's epsilon on its own (forward noise, private "
        "quantile, DP-SGD gradients and adaptive clip counts apart), by each ledger's accountant.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Recompute every client's epsilon per artefact with every accountant."""
    with handle_errors():
        ledgers = _load_ledgers(run_dir)
        clients = {cid: led.summary() for cid, led in sorted(ledgers.items())}
        split_rows = _split(ledgers) if split else None
    headline: dict[str, Any] = {}
    for cid, summary in clients.items():
        for artefact, info in summary["artefacts"].items():
            claim = info["claimed"]
            best = headline.get(artefact)
            if best is None or claim["epsilon"] > best["epsilon"]:
                headline[artefact] = {**claim, "client_id": cid}
    if json_out:
        out = {"clients": clients, "headline": headline}
        if split_rows is not None:
            out["split"] = split_rows
        print_json(_jsonable(out))
        return
    table = Table(title=f"privacy ledgers in {run_dir}")
    for col in ("client", "artefact", "events", "pld", "prv", "rdp", "exact", "claimed"):
        table.add_column(col, justify="left" if col in ("client", "artefact") else "right")
    for cid, summary in clients.items():
        for artefact, info in summary["artefacts"].items():
            eps = info["epsilon"]
            claim = info["claimed"]
            table.add_row(
                cid,
                artefact,
                str(info["events"]),
                *(_fmt(eps[name]) for name in ("pld", "prv", "rdp", "exact")),
                f"{_fmt(claim['epsilon'])} ({claim['accountant']})",
            )
    console.print(fit(table, 0))
    if split_rows is not None:
        console.print(_split_table(split_rows))
    for artefact, claim in headline.items():
        console.print(
            f"{artefact}: epsilon {_fmt(claim['epsilon'])} ({claim['accountant']}, "
            f"client {claim['client_id']}, delta per client ledger)"
        )
    client_level = [info["client_level"] for s in clients.values() for info in s["artefacts"].values()
                    if "client_level" in info]
    if client_level:  # the unit is one client's whole update (docs/client_level.md)
        worst = max(client_level, key=lambda c: c["epsilon"])
        console.print(f"client-level (add/remove of one client's update): epsilon {_fmt(worst['epsilon'])} "
                      f"({worst['accountant']}, max over clients)")
