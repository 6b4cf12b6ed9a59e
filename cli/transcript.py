"""`securediff transcript ...`: check a run's protocol transcript against its roster,
or show who sent what in each round."""

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import (
    EXIT_CANNOT_PROCEED,
    EXIT_CHECK_FAILED,
    EXIT_USAGE,
    JsonFlag,
    console,
    fail,
    handle_errors,
    print_json,
)
from cli.render import fit
from protocols.roster import load_rosters
from protocols.tee import SIMULATED_NOTICE
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
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
UNPINNED = (
    "roster not pinned: read from the run directory, which the aggregator writes, so this "
    "proves nothing against the aggregator; pin it with --roster-sha256 HEX or --roster FILE"
)
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
            help="Pinned roster(s) to trust, from a copy the aggregator cannot write "
            "(default: roster.json beside the transcript, which pins nothing)."
        ),
    ] = None,
    roster_sha256: Annotated[
        list[str] | None,
        typer.Option(
            "--roster-sha256",
            help="Pin the roster by its SHA-256 (as `securediff train` prints it); "
            "repeat for each session's roster. The keys are then read from --roster or "
            "the run directory, and only a roster with a pinned digest is trusted.",
            show_default=False,
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
    thresholds, the both-shares rule, and with payloads the unmasked sum), on every
    round that released anything, closed or not.
    Exit 0 verified, 1 failed, 2 bad usage, 3 unreadable."""
    if not target.exists():
        fail(f"no run directory or transcript at {target}", EXIT_CANNOT_PROCEED)
    path = _path(target)
    for digest in roster_sha256 or ():
        if _SHA256.fullmatch(digest) is None:
            fail(f"--roster-sha256 {digest!r} is not 64 hex digits", EXIT_USAGE)
    beside = path.parent / "roster.json"  # the aggregator's copy
    # Naming the run directory's own roster file explicitly pins nothing either.
    pinned = bool(roster_sha256) or (roster is not None and not _same_file(roster, beside))
    with handle_errors():
        rosters = load_rosters(roster if roster is not None else beside)
        report = verify_transcript(path, rosters, payloads=payloads,
                                   expected_rounds=expect_rounds,
                                   roster_sha256=roster_sha256 or None)
    if json_output:
        print_json(_verdict(report, pinned=pinned))
    else:
        _render(report, pinned=pinned)
    if not report.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.samefile(b))
    except OSError:
        return False


def _verdict(report: TranscriptReport, *, pinned: bool) -> dict[str, Any]:
    out = {**report.to_dict(), "roster_pinned": pinned}
    notes = ([] if pinned else [UNPINNED]) + (
        [SIMULATED_NOTICE] if "tee" in report.protocols else [])
    return {**out, "notes": notes}


def _render(report: TranscriptReport, *, pinned: bool) -> None:
    summary = (
        f"{report.records} records, {report.sessions} session(s), {report.rounds} round(s) "
        f"aggregated, {report.aborted_rounds} aborted"
    )
    if report.replayed_rounds:
        summary += f", {report.replayed_rounds} replayed from payloads"
    if report.interrupted_rounds:
        summary += f", {report.interrupted_rounds} interrupted before any release and redone"
    if report.interrupted_after_release:
        summary += (f", {report.interrupted_after_release} interrupted after release "
                    "(audited without a close)")
    if report.ok:
        console.print(f"[bold green]verified[/] {report.path}: {summary}", highlight=False)
    else:
        console.print(
            f"[bold red]verification failed[/] {report.path}: {len(report.problems)} "
            f"problem(s); {summary}",
            highlight=False,
        )
    for problem in report.problems[:_SHOWN]:
        console.print(f"  line {problem.line}: {problem.message}", highlight=False, markup=False)
    if len(report.problems) > _SHOWN:
        console.print(f"  ... and {len(report.problems) - _SHOWN} more", highlight=False)
    for note in _verdict(report, pinned=pinned)["notes"]:
        console.print(f"[bold yellow]note:[/] {escape(note)}", highlight=False)


@transcript_app.command("show")
def show(
    target: Target,
    round_index: Annotated[
        int | None, typer.Option("--round", help="Only this protocol round index (from 0; not a "
                                   "training round number; all sessions).")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Per round: who sent what and how much, the outcome, and who dropped (with
    the recorded reason). Shows the file as written; `verify` says if it can be trusted."""
    with handle_errors():
        rounds = summarize_transcript(_path(target))
    if round_index is not None:
        known = sorted({r.round for r in rounds if isinstance(r.round, int)})
        rounds = tuple(r for r in rounds if r.round == round_index)
        if not rounds:
            span = f"rounds {known[0]}..{known[-1]}" if known else "no rounds"
            fail(f"{_path(target)} has no round {round_index} ({span})", EXIT_USAGE)
    if json_output:
        print_json({"path": str(_path(target)),
                    "rounds": [_round_dict(r) for r in rounds]})
        return
    for summary in rounds:
        console.print(_round_table(summary))
        if summary.protocol == "tee":
            console.print(f"[bold yellow]{escape(SIMULATED_NOTICE)}[/]", highlight=False)


def _round_dict(summary: RoundSummary) -> dict[str, Any]:
    notice = {"notice": SIMULATED_NOTICE} if summary.protocol == "tee" else {}
    return {**summary.to_dict(), **notice}


def _round_table(summary: RoundSummary) -> Table:
    colour = {"aggregated": "green", "aborted": "red"}.get(summary.outcome, "yellow")
    survivors = sum(p.status == "survivor" for p in summary.parties)
    clients = sum(p.status != "aggregator" for p in summary.parties)
    title = (
        # Protocol round indices count from 0 and are not training rounds: one
        # training round may take several (distributed DP), and a resumed session
        # moves on to indices no earlier session used.
        f"protocol round index {summary.round} (session {summary.session}, {summary.protocol}): "
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
    return fit(table, 0)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)
