"""Rich rendering of run results: summary table, partition table, statement."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from cli.common import console


def fit(table: Table, *id_columns: int) -> Table:
    """Make `table` readable at the terminal's width (80 columns and up): no rules
    (the width goes to the cells), identifiers (client ids, names) never wrapped
    or shortened, and no cell cut to an ellipsis or cropped at the edge. Where the
    cells do not fit on one line side by side, each column gets an explicit width:
    its longest word (the widest narrowed first, down to their header's longest
    word, then further, folding long words), and what room is left shared out in
    proportion to what each column would use on one line. Call it after the rows
    are added."""
    table.box = None
    table.pad_edge = False
    longest, header_word, natural = {}, {}, {}
    for index, column in enumerate(table.columns):
        column.overflow = "fold"
        header = Text.from_markup(str(column.header)).plain
        cells = [header, *(Text.from_markup(c).plain for c in column.cells if isinstance(c, str))]
        longest[index] = max(len(word) for cell in cells for word in [*cell.split(), ""])
        header_word[index] = max(map(len, header.split() or [""]))
        natural[index] = max(len(line) for cell in cells for line in [*cell.splitlines(), ""])
        if index in id_columns:
            column.no_wrap = True
            column.min_width = longest[index]
    # Rich crops, silently, a table wider than the terminal: so the widths are
    # decided here whenever the cells would not fit on one line each.
    room = console.width - 2 * (len(table.columns) - 1)  # one blank either side of a gap
    if sum(natural.values()) <= room:
        return table
    flexible = [i for i in range(len(table.columns)) if i not in id_columns]
    width = {i: longest[i] for i in range(len(table.columns))}
    for floor in (header_word, {i: 3 for i in flexible}):
        while sum(width.values()) > room:
            above = [i for i in flexible if width[i] > floor[i]]
            if not above:
                break
            width[max(above, key=lambda i: width[i] - floor[i])] -= 1
    spare = room - sum(width.values())
    wants = {i: max(0, natural[i] - width[i]) for i in flexible}
    total = sum(wants.values())
    for i in flexible:
        width[i] += spare * wants[i] // total if total else 0
        table.columns[i].min_width = table.columns[i].max_width = width[i]
    return table


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def partition_table(rows: list[dict[str, Any]], num_classes: int) -> Table:
    table = Table(title=f"Partition: member counts per class 0..{num_classes - 1}",
                  caption="mem: members; hold: holdout (the audits' non-members); "
                  "minority: the client's minority classes")
    table.add_column("client")
    table.add_column("mem", justify="right")
    table.add_column("hold", justify="right")
    for k in range(num_classes):
        table.add_column(str(k), justify="right")
    table.add_column("minority")
    for r in rows:
        table.add_row(r["client"], str(r["members"]), str(r["holdout"]), *map(str, r["class_counts"]),
                      ",".join(map(str, r["minority_classes"])) or "—")
    return fit(table, 0)


def summary_table(clients: list[dict[str, Any]], summary: dict[str, Any]) -> Table:
    title = (f"{summary['strategy']} on {summary['dataset']}, {summary['num_clients']} clients, "
             f"protocol {summary['protocol']}")
    if not summary["private"]:
        title += "  [bold red](NOT PRIVATE: insecure test mode)[/]"
    table = Table(title=title, caption="eps: epsilon of the shared model; acc lr / acc cnn: downstream "
                  "accuracy of a logistic regression / a small CNN trained on synthetic data; FID on "
                  "majority / minority classes; class-wise bias std and gap")
    for col in ("client", "mem", "eps", "acc lr", "acc cnn", "FID maj", "FID min", "bias std", "bias gap"):
        table.add_column(col, justify="right" if col != "client" else "left")
    for c in clients:
        table.add_row(str(c["client_id"]), str(c["members"]), _fmt(c["epsilon_shared"], 2), _fmt(c["accuracy"]),
                      _fmt(c.get("accuracy_cnn")), _fmt(c["fid_majority"], 2), _fmt(c["fid_minority"], 2), _fmt(c["bias_std"]),
                      _fmt(c["bias_gap"]))
    mean = summary.get("mean", {})
    table.add_section()
    table.add_row("mean", "", _fmt(summary.get("epsilon_shared_max"), 2) + " (max)", _fmt(mean.get("accuracy")),
                  _fmt(mean.get("accuracy_cnn")), _fmt(mean.get("fid_majority"), 2), _fmt(mean.get("fid_minority"), 2),
                  _fmt(mean.get("bias_std")), _fmt(mean.get("bias_gap")))
    return fit(table, 0)


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
    assumptions = statement.get("assumptions", [])  # nor assumptions before those
    caption = "\n".join([f"[bold yellow]{n}[/]" for n in notices]
                        + [f"assumes: {a}" for a in assumptions]) or None
    table = Table(title="Privacy statement", caption=caption, show_lines=True)
    table.add_column("artefact")
    table.add_column("who sees it")
    table.add_column("guarantee")
    for r in statement["rows"]:
        table.add_row(r["artefact"], r["who_sees_it"], r["guarantee"])
    fit(table)
    table.leading = 1  # long text: a blank line between rows
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


def runs_table(entries: list[Any]) -> Table:
    """`securediff runs`: one row per run directory."""
    styles = {"running": "cyan", "unfinished": "yellow", "finished": "green", "corrupt": "bold red"}
    table = Table(title="runs", caption="eps: the headline epsilon of a finished run's privacy statement")
    for col in ("name", "state", "eps", "detail"):
        table.add_column(col, justify="right" if col == "eps" else "left")
    for e in entries:
        table.add_row(e.name, f"[{styles[e.state]}]{e.state}[/]", _fmt(e.epsilon, 2), e.detail)
    return fit(table, 0)
