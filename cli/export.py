"""`securediff export RUN DIR`: copy what may leave the machine, say what stayed."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonFlag, console, handle_errors, print_json

WIDTH = 80


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.0f} KB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MB"


def _lines(head: str, text: str) -> list[str]:
    """`head` then `text` wrapped under it, never past 80 columns."""
    return [f"  {head}", *textwrap.wrap(text, WIDTH - 1, initial_indent="      ",
                                        subsequent_indent="      ")]


def export_run(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out_dir: Annotated[Path, typer.Argument(help="New or empty directory to export into.")],
    as_json: JsonFlag = False,
) -> None:
    """Copy only what may leave the machine (shared model, privacy statement, transcript,
    roster, metrics, samples, report) into DIR; list what stayed behind and why."""
    from securediff.export import export_run as export

    with handle_errors():
        result = export(run_dir, out_dir)
    if as_json:
        print_json({"out_dir": str(result.out_dir), "copied": result.copied,
                    "left_out": [{"name": n, "why": w} for n, w in result.left_out]})
        return
    lines = textwrap.wrap(f"exported {len(result.copied)} files to {result.out_dir}:", WIDTH - 1)
    for row in result.copied:
        text = row["what"] + (f"; guarantee: {row['guarantee']}" if row["guarantee"] else "")
        lines += _lines(f"{row['name']} ({_size(row['bytes'])})", text)
    lines.append(f"left out ({len(result.left_out)}):")
    for name, why in result.left_out:
        lines += _lines(name, why)
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
