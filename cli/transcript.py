"""`securediff transcript ...`: check a run's protocol transcript against its roster."""

from pathlib import Path
from typing import Annotated

import typer

from cli.common import EXIT_CHECK_FAILED, JsonFlag, console, handle_errors, print_json
from protocols.roster import load_rosters
from protocols.transcript import TranscriptReport, verify_transcript

transcript_app = typer.Typer(
    help="Inspect and verify protocol transcripts.", no_args_is_help=True, add_completion=False
)

_SHOWN = 20


@transcript_app.command("verify")
def verify(
    target: Annotated[
        Path, typer.Argument(help="A run directory or its transcript.jsonl.", show_default=False)
    ],
    roster: Annotated[
        Path | None,
        typer.Option(
            help="Pinned roster(s) to trust (default: roster.json beside the transcript)."
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Replay a transcript without trusting the aggregator: signatures, chains,
    stage order and co-signed round closes. Exit 0 verified, 1 failed, 3 unreadable."""
    path = target / "transcript.jsonl" if target.is_dir() else target
    with handle_errors():
        rosters = load_rosters(roster if roster is not None else path.parent / "roster.json")
        report = verify_transcript(path, rosters)
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
