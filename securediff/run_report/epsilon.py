"""Each client's shared-model epsilon after each round, recomputed from the run's
ledger by the library's own ledger and accountants.

The ledger merges a mechanism's repeated steps into one event (that is how it
composes them), so it does not say which round paid for which step. The round
logs in metrics.json do say which clients trained in each round; a client's
per-round steps (DP-SGD, distributed noise) are spread evenly over the rounds it
trained in, and one-off events (forward noise, a private quantile, randomized
labels) are paid before round 1. After the last round every client's ledger is
whole, so the last row is exactly the epsilon the run claims.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from securediff.privacy.client_level import ClientLevelEvent
from securediff.privacy.ledger import DistributedSkellamEvent, DPSGDEvent, PrivacyLedger

PER_ROUND = (DPSGDEvent, DistributedSkellamEvent)


def _events_after(ledger: PrivacyLedger, done: int, total: int, *, run_done: int = 0,
                  run_total: int = 0) -> tuple:
    """The ledger's shared-model events once `done` of the client's `total` training rounds
    ran (`run_done` of the run's `run_total`: client-level rounds charge every client,
    sampled or not)."""
    out = []
    for event in ledger.events:
        if event.artefact != "shared":
            continue
        if isinstance(event, ClientLevelEvent) and run_total:
            steps = math.floor(event.steps * run_done / run_total)
            if steps == 0:
                continue
            event = replace(event, steps=steps)
        elif isinstance(event, PER_ROUND) and total:
            steps = math.floor(event.steps * done / total)
            if steps == 0:
                continue
            event = replace(event, steps=steps)
        out.append(event)
    return tuple(out)


def epsilon_by_round(ledgers: dict[str, PrivacyLedger],
                     rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Row r (0 = before the first round): per-client epsilon and the maximum.
    `rounds`: metrics.json's round logs, each naming the clients that trained."""
    trained = [set(r.get("clients", ledgers)) for r in rounds]
    totals = {cid: sum(cid in t for t in trained) for cid in ledgers}
    memo: dict[tuple, float] = {}  # clients with the same events share one computation
    rows = []
    for r in range(len(rounds) + 1):
        per_client: dict[str, float | None] = {}
        for cid, ledger in sorted(ledgers.items()):
            done = sum(cid in t for t in trained[:r])
            events = _events_after(ledger, done, totals[cid], run_done=r, run_total=len(rounds))
            key = (events, ledger.delta, ledger.accountant)
            if key not in memo:
                memo[key] = PrivacyLedger(
                    client_id=cid, budget_epsilon=ledger.budget_epsilon, delta=ledger.delta,
                    accountant=ledger.accountant, events=events).epsilon("shared")
            eps = memo[key]
            per_client[cid] = eps if math.isfinite(eps) else None
        finite = [v for v in per_client.values() if v is not None]
        rows.append({"round": r, "clients": per_client, "max": max(finite) if finite else None})
    return rows


def epsilon_figure(rows: list[dict[str, Any]], *, title: str):
    """Epsilon against rounds: the maximum bold, each client thin."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.0, 3.4), dpi=100)
    ax = fig.add_subplot()
    xs = [row["round"] for row in rows]
    clients = list(rows[0]["clients"]) if rows else []
    for cid in clients if len(clients) <= 20 else []:
        ys = [row["clients"][cid] for row in rows]
        ax.plot(xs, [math.nan if y is None else y for y in ys], linewidth=0.8, alpha=0.5)
    ax.plot(xs, [math.nan if row["max"] is None else row["max"] for row in rows], color="black",
            linewidth=2.2, marker="o", markersize=3, label="max over clients (the claim)")
    ax.set_xlabel("round (0 = before the first round)")
    ax.set_ylabel("epsilon of the shared model")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
