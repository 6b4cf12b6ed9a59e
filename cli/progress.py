"""Progress bars per round and per client, with ETA, fed by the library's events."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cli.common import err_console


class RunProgress:
    """Callable the run reports to: ("round_start" | "client_start" | "round_end" | ...)."""

    def __init__(self, *, num_clients: int = 0, enabled: bool = True) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=err_console, disable=not enabled, transient=False,
        )
        # A resume learns the count from the run's own "run_start" event.
        self.num_clients = num_clients
        self.rounds = None
        self.clients = None
        self.started: set[str] = set()  # clients begun this round (a client has several phases)

    def __enter__(self) -> RunProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "run_start":
            self.num_clients = info["clients"]
        elif event == "restart":
            self.bar.console.print(f"[yellow]the run restarts from its start: {escape(info['reason'])}"
                                   "; nothing had left any client[/]")
        elif event == "round_start":
            if self.rounds is None:
                self.rounds = self.bar.add_task("rounds", total=info["rounds"], completed=info["round"])
            self.clients = self.clients or self.bar.add_task("clients", total=self.num_clients)
            self.bar.reset(self.clients, total=self.num_clients)
            self.started = set()
            self.bar.update(self.clients, description=f"round {info['round'] + 1}")
        elif event == "client_start" and self.clients is not None:
            self.bar.update(self.clients, description=f"round {info['round'] + 1}: {info['client']} {info['phase']}")
            if info["client"] not in self.started:
                self.started.add(info["client"])
                self.bar.advance(self.clients)
        elif event == "round_aborted":
            # Escaped: the reason comes from protocol messages, not from us.
            self.bar.console.print(f"[yellow]round {info['round'] + 1} aborted:[/] "
                                   f"{escape(info['reason'])}; the shared model is unchanged")
        elif event == "ledger_recharge":
            self.bar.console.print(
                f"[yellow]{escape(info['client'])}: the round interrupted by the crash is charged "
                f"again; {_budget_growth(info['budget_before'], info['budget_after'])}[/]")
        elif event == "round_end" and self.rounds is not None:
            self.bar.advance(self.rounds)
        elif event == "evaluate":
            self.eval_task = self.bar.add_task("sampling + evaluation", total=self.num_clients)
        elif event == "sample_client":
            self.bar.update(self.eval_task, description=f"sampling {info['client']}")
            self.bar.advance(self.eval_task)


def _budget_growth(before: float, after: float) -> str:
    """Enough digits that the two figures differ when the budget grew at all."""
    if after <= before:
        return f"its budget ({before:.6g}) still covers it"
    digits = 4
    while digits < 12 and f"{before:.{digits}g}" == f"{after:.{digits}g}":
        digits += 1
    return f"its budget grows from {before:.{digits}g} to {after:.{digits}g}"
