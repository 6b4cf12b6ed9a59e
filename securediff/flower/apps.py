"""The Flower ServerApp and ClientApp (Message API) of securediff.

`flwr run` finds them through `[tool.flwr.app.components]` in the top-level
pyproject.toml, by way of cli/flower_app.py (the bundle's only module: each
party imports this one from its own installation). The ServerApp is the aggregator: it greets the SuperNodes,
maps each to the roster client whose key it proves to hold, and drives the
rounds with `run_remote_round`; every request and reply is one Flower message of
type `query` holding one `ConfigRecord`. The ClientApp is a thin shell over
`ClientNode`; what a node keeps between messages lives in its `context.state`.

Run config (`[tool.flwr.app.config]`, override with `flwr run --run-config`)
and node config (`flower-supernode --node-config`) are described in the README
section "Running across machines".
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from securediff.flower.exchange import Reply, Request

server_app = ServerApp()
client_app = ClientApp()

RECORD = "securediff"


@server_app.main()
def aggregator_main(grid: Grid, context: Context) -> None:
    from securediff.flower.server import AggregatorSettings, run_aggregator

    settings = AggregatorSettings.from_run_config(context.run_config)
    run_aggregator(settings, GridExchange(grid, settings.stage_timeout))


@client_app.query()
def client_query(msg: Message, context: Context) -> Message:
    from securediff.flower.client import handle_request

    record = context.state.get(RECORD)
    state = state_from_record(record) if isinstance(record, ConfigRecord) else {}
    reply = handle_request(context.node_config, context.run_config, state,
                           dict(msg.content[RECORD]))
    context.state[RECORD] = state_to_record(state)
    return Message(RecordDict({RECORD: ConfigRecord(reply)}), reply_to=msg)


class GridExchange:
    """Requests to client ids, as Flower messages to the nodes that proved them."""

    def __init__(self, grid: Grid, timeout: float) -> None:
        self.grid = grid
        self.timeout = timeout
        self.nodes: dict[str, int] = {}  # client id -> node id, set after the greeting
        # (stage or request kind, seconds from sending to the last reply) per exchange,
        # taken by the aggregator into each round's log
        self.timings: list[tuple[str, float]] = []

    def node_ids(self) -> list[int]:
        return sorted(self.grid.get_node_ids())

    def to_nodes(self, requests: Mapping[int, Request], group: str,
                 timeout: float | None = None) -> dict[int, Reply]:
        timeout = self.timeout if timeout is None else timeout
        messages = [
            Message(RecordDict({RECORD: ConfigRecord(req)}), dst_node_id=node,
                    message_type="query", group_id=group, ttl=timeout + 60)
            for node, req in requests.items()
        ]
        replies: dict[int, Reply] = {}
        first = next(iter(requests.values()), {})
        started = time.perf_counter()
        answered = send_and_receive(self.grid, messages, timeout=timeout)
        self.timings.append((str(first.get("stage") or first.get("kind", "")),
                             time.perf_counter() - started))
        for reply in answered:
            node = reply.metadata.src_node_id
            if reply.has_error():
                replies[node] = {"error": str(reply.error.reason)}
            elif RECORD in reply.content:
                replies[node] = dict(reply.content[RECORD])
        return replies

    def __call__(self, requests: Mapping[str, Request],
                 timeout: float | None = None) -> dict[str, Reply]:
        """`timeout`: seconds to wait (default: the stage timeout)."""
        by_node = {self.nodes[c]: req for c, req in requests.items() if c in self.nodes}
        group = str(next(iter(requests.values()), {}).get("round", ""))
        answers = self.to_nodes(by_node, group, timeout)
        return {c: answers[n] for c, n in self.nodes.items() if n in answers and c in requests}


# Seconds between two pulls for the replies of an exchange. Flower's
# Grid.send_and_receive sleeps a fixed 3 s after every pull that leaves replies
# missing, so each exchange ended on a 3 s boundary: about 1.5 s per exchange
# spent waiting for replies that were already there (docs/performance.md, "Flower on
# loopback"). A pull is one ServerAppIo request to the SuperLink.
REPLY_POLL_SECONDS = 0.2


def send_and_receive(grid: Grid, messages: list[Message], *, timeout: float,
                     poll: float = REPLY_POLL_SECONDS) -> list[Message]:
    """Grid.send_and_receive with a pull every `poll` seconds: push the messages, then
    pull until every one has a reply or `timeout` seconds have passed (the replies
    that came by then; a missing one is the caller's dropout)."""
    pending = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while True:
        pulled = list(grid.pull_messages(pending))
        replies.extend(pulled)
        pending.difference_update(m.metadata.reply_to_message_id for m in pulled)
        if not pending or time.monotonic() >= deadline:
            return replies
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


# -- node state <-> ConfigRecord (flat lists; a ConfigRecord holds no nesting) ----------
def state_to_record(state: Mapping[str, Any]) -> ConfigRecord:
    flat: dict[str, Any] = {k: v for k, v in state.items()
                            if k not in ("history", "head") and v is not None}
    history = state.get("history", [])
    flat["history_stages"] = [str(s) for s, _ in history]
    flat["history_payloads"] = [bytes(p) for _, p in history]
    head = state.get("head")
    flat["head_seq"], flat["head_digest"] = (int(head[0]), str(head[1])) if head else (-1, "")
    return ConfigRecord(flat)


def state_from_record(record: ConfigRecord) -> dict[str, Any]:
    flat = dict(record)
    stages, payloads = flat.pop("history_stages", []), flat.pop("history_payloads", [])
    seq, digest = flat.pop("head_seq", -1), flat.pop("head_digest", "")
    flat["history"] = [[s, p] for s, p in zip(stages, payloads, strict=True)]
    flat["head"] = None if seq < 0 else [seq, digest]
    for key in ("own", "pending_cosigs"):
        flat[key] = list(flat.get(key, []))
    return flat


def wait_for_nodes(exchange: GridExchange, count: int, timeout: float) -> list[int]:
    """The SuperNodes connected once `count` are there (or `timeout` passed)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = exchange.node_ids()
        if len(nodes) >= count or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
