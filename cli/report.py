"""`securediff report RUN`: write RUN/report.html, one self-contained page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonFlag, console, handle_errors, print_json


def report_run(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    as_json: JsonFlag = False,
) -> None:
    """Write RUN/report.html: config, partition, metrics, privacy statement, epsilon over
    rounds, samples and audit, in one offline page (refuses an unverifiable run, exit 3)."""
    from securediff.locks import writing
    from securediff.run_report import write_report

    with handle_errors(), writing(run_dir):  # one writer of a run at a time
        path = write_report(run_dir)
    if as_json:
        print_json({"report": str(path)})
    else:
        console.print(f"report written to [bold]{path}[/]", soft_wrap=True)
