"""Rich rendering of run results: summary table, partition table, statement."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cli.common import console


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def partition_table(rows: list[dict[str, Any]], num_classes: int) -> Table:
    table = Table(title="Partition (member counts per class; holdout kept for audits)")
    table.add_column("client", no_wrap=True)
    table.add_column("members", justify="right")
    table.add_column("holdout", justify="right")
    for k in range(num_classes):
        table.add_column(str(k), justify="right")
    table.add_column("minority")
    for r in rows:
        table.add_row(r["client"], str(r["members"]), str(r["holdout"]), *map(str, r["class_counts"]),
                      ",".join(map(str, r["minority_classes"])) or "—")
    return table


def summary_table(clients: list[dict[str, Any]], summary: dict[str, Any]) -> Table:
    title = (f"{summary['strategy']} on {summary['dataset']}, {summary['num_clients']} clients, "
             f"protocol {summary['protocol']}")
    if not summary["private"]:
        title += "  [bold red](NOT PRIVATE: insecure test mode)[/]"
    table = Table(title=title)
    for col in ("client", "members", "epsilon (shared)", "downstream acc", "FID majority",
                "FID minority", "bias std", "bias gap"):
        table.add_column(col, justify="right" if col != "client" else "left")
    for c in clients:
        table.add_row(str(c["client_id"]), str(c["members"]), _fmt(c["epsilon_shared"], 2), _fmt(c["accuracy"]),
                      _fmt(c["fid_majority"], 2), _fmt(c["fid_minority"], 2), _fmt(c["bias_std"]),
                      _fmt(c["bias_gap"]))
    mean = summary.get("mean", {})
    table.add_section()
    table.add_row("mean", "", _fmt(summary.get("epsilon_shared_max"), 2) + " (max)", _fmt(mean.get("accuracy")),
                  _fmt(mean.get("fid_majority"), 2), _fmt(mean.get("fid_minority"), 2),
                  _fmt(mean.get("bias_std")), _fmt(mean.get("bias_gap")))
    return table


def print_protocol_notice(protocol: str, params: dict[str, Any] | None = None) -> None:
    """What the aggregator's blindness rests on, for a protocol whose name promises more:
    one unwrapped line, so that it survives narrow terminals and grep."""
    from securediff.statement import protocol_notice

    if protocol == "plain":  # the library default: say it before the rounds, not after
        console.print("[bold red]protocol plain: INSECURE baseline, the aggregator sees every "
                      "client's update (choose --protocol secagg, ckks or tee)[/]",
                      highlight=False, soft_wrap=True)
        return
    notice = protocol_notice(protocol, params or {})
    if notice is not None:
        console.print(f"[bold yellow]protocol {protocol}: {notice}[/]", highlight=False, soft_wrap=True)


def statement_table(statement: dict[str, Any]) -> Table:
    notices = statement.get("notices", [])  # none in statements stored before notices
    caption = "\n".join(f"[bold yellow]{n}[/]" for n in notices) or None
    table = Table(title="Privacy statement", caption=caption, show_lines=True)
    table.add_column("artefact")
    table.add_column("who sees it")
    table.add_column("guarantee")
    for r in statement["rows"]:
        table.add_row(r["artefact"], r["who_sees_it"], r["guarantee"])
    return table


def print_result(result: Any) -> None:
    console.print(summary_table(result.clients, result.summary))
    for notice in result.statement.get("notices", []):
        console.print(f"[bold yellow]protocol {result.summary.get('protocol', '')}: {notice}[/]",
                      highlight=False, soft_wrap=True)
    console.print(statement_table(result.statement))
    console.print(f"run directory: [bold]{result.run_dir}[/]  (samples.png, metrics.json, ledger.json, "
                  f"transcript.jsonl)  time {result.seconds:.0f} s, peak memory {result.peak_rss_mb:.0f} MB")
    pins = " ".join(f"--roster-sha256 {d}" for d in result.summary.get("roster_sha256") or ())
    if pins:
        console.print(f"roster pinned for review: securediff transcript verify {result.run_dir} {pins}",
                      soft_wrap=True)
