"""`securediff transcript ...`: check a run's protocol transcript against its roster,
or show who sent what in each round."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import EXIT_CHECK_FAILED, JsonFlag, console, handle_errors, print_json
from protocols.roster import load_rosters
from protocols.transcript import (
    RoundSummary,
    TranscriptReport,
    summarize_transcript,
    verify_transcript,
)

transcript_app = typer.Typer(
    help="Inspect and verify protocol transcripts.", no_args_is_help=True, add_completion=False
)

_SHOWN = 20
Target = Annotated[
    Path, typer.Argument(help="A run directory or its transcript.jsonl.", show_default=False)
]


def _path(target: Path) -> Path:
    return target / "transcript.jsonl" if target.is_dir() else target


@transcript_app.command("verify")
def verify(
    target: Target,
    roster: Annotated[
        Path | None,
        typer.Option(
            help="Pinned roster(s) to trust (default: roster.json beside the transcript)."
        ),
    ] = None,
    payloads: Annotated[
        Path | None,
        typer.Option(
            help="Stored payloads to replay the rounds from (default: "
            "transcript.jsonl.payloads beside it, when present)."
        ),
    ] = None,
    expect_rounds: Annotated[
        int | None,
        typer.Option(help="Rounds the run was to aggregate: catches a cut between rounds."),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Replay a transcript without trusting the aggregator: signatures, chains,
    stage order, co-signed round closes, and the protocol's own rules (for secagg:
    thresholds, the both-shares rule, and with payloads the unmasked sum).
    Exit 0 verified, 1 failed, 3 unreadable."""
    path = _path(target)
    with handle_errors():
        rosters = load_rosters(roster if roster is not None else path.parent / "roster.json")
        report = verify_transcript(path, rosters, payloads=payloads,
                                   expected_rounds=expect_rounds)
    if json_output:
        print_json(report.to_dict())
    else:
        _render(report)
    if not report.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _render(report: TranscriptReport) -> None:
    summary = (
        f"{report.records} records, {report.sessions} session(s), {report.rounds} round(s) "
        f"aggregated, {report.aborted_rounds} aborted"
    )
    if report.replayed_rounds:
        summary += f", {report.replayed_rounds} replayed from payloads"
    if report.interrupted_rounds or report.repeated_rounds:
        summary += (f", {report.interrupted_rounds} interrupted by a crash and redone, "
                    f"{report.repeated_rounds} aggregated again after a resume")
    if report.ok:
        console.print(f"[bold green]verified[/] {report.path}: {summary}", highlight=False)
        return
    console.print(
        f"[bold red]verification failed[/] {report.path}: {len(report.problems)} problem(s); {summary}",
        highlight=False,
    )
    for problem in report.problems[:_SHOWN]:
        console.print(f"  line {problem.line}: {problem.message}", highlight=False, markup=False)
    if len(report.problems) > _SHOWN:
        console.print(f"  ... and {len(report.problems) - _SHOWN} more", highlight=False)


@transcript_app.command("show")
def show(
    target: Target,
    round_index: Annotated[
        int | None, typer.Option("--round", help="Only this round (all sessions).")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Per round: who sent what and how much, the outcome, and who dropped (with
    the recorded reason). Shows the file as written; `verify` says if it can be trusted."""
    with handle_errors():
        rounds = summarize_transcript(_path(target))
    if round_index is not None:
        rounds = tuple(r for r in rounds if r.round == round_index)
    if json_output:
        print_json({"path": str(_path(target)), "rounds": [r.to_dict() for r in rounds]})
        return
    for summary in rounds:
        console.print(_round_table(summary))


def _round_table(summary: RoundSummary) -> Table:
    colour = {"aggregated": "green", "aborted": "red"}.get(summary.outcome, "yellow")
    survivors = sum(p.status == "survivor" for p in summary.parties)
    clients = sum(p.status != "aggregator" for p in summary.parties)
    title = (
        f"round {summary.round} (session {summary.session}, {summary.protocol}): "
        f"[{colour}]{summary.outcome}[/], {survivors}/{clients} clients survived"
    )
    if summary.reason:
        title += f"\n{summary.reason}"
    caption = "  ".join(f"{stage}: {count} msg, {_size(size)}"
                        for stage, count, size in summary.stages)
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for name, justify in (("party", "left"), ("sent", "right"), ("bytes up", "right"),
                          ("bytes down", "right"), ("last stage", "left"), ("status", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for p in summary.parties:
        style = "red" if p.status.startswith("dropped") else None
        table.add_row(p.party, str(p.messages), _size(p.bytes_sent), _size(p.bytes_received),
                      p.last_stage, p.status, style=style)
    return table


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)
