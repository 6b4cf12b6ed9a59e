"""`securediff experiment report`: aggregate a suite directory into the results
JSON, the figures and the suite's block of RESULTS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from securediff.experiments.aggregate import aggregate
from securediff.experiments.cells import read_suite
from securediff.experiments.document import (
    copy_sample_grids,
    epsilon_plot,
    markdown_block,
    write_block,
)
from securediff.experiments.suites import get_suite
from securediff.storage import atomic_write_json


def write_report(root: Path, *, markdown: Path | None, json_path: Path | None,
                 figures: Path | None, block: str | None = None) -> dict[str, Any]:
    """Everything is derived from the cell files; nothing is re-run. `block` names
    the markdown block written (default: the suite's name)."""
    root = Path(root)
    meta = read_suite(root)
    suite = get_suite(meta["suite"])
    results = aggregate(root, suite)
    figures = Path(figures) if figures else (Path(json_path).parent if json_path else root / "figures")
    grids = copy_sample_grids(root, results, figures)
    plot = epsilon_plot(results, figures / f"{suite.name}-epsilon.png")
    results["figures"] = {"epsilon_plot": None if plot is None else str(plot),
                          "sample_grids": {k: str(v) for k, v in grids.items()}}
    quick = " --quick" if meta["quick"] else ""
    report_cmd = f"securediff experiment report {root}"
    report_cmd += f" --write {markdown}" if markdown else ""
    report_cmd += f" --block {block}" if block else ""
    report_cmd += f" --results {json_path}" if json_path else ""
    results["commands"] = [
        f"securediff experiment run --suite {suite.name}{quick} --seeds {meta['seeds']} --out {root}",
        report_cmd,
    ]
    if json_path is not None:
        atomic_write_json(Path(json_path), results)
    if markdown is not None:
        md = Path(markdown)
        text = markdown_block(results, md_path=md, figures=grids, plot=plot, commands=results["commands"],
                              block=block)
        write_block(md, block or suite.name, text)
    return results
