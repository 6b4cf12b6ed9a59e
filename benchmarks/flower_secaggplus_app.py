"""Flower's own SecAgg+ as a Flower App, for benchmarks/flower_loopback.py.

`flower_loopback.py` copies this file into a throwaway app directory next to a
generated pyproject.toml and submits it with `flwr run`, to the same SuperLink
and SuperNodes as securediff's own app. The ServerApp drives each round with
Flower's `SecAggPlusWorkflow` (a strategy that samples every node and keeps the
aggregate, nothing else: no evaluation, no initial parameter fetch); the
ClientApp is a NumPyClient behind `secaggplus_mod` whose `fit` returns a fixed
random vector. The ServerApp writes the seconds of each round, and of each
exchange in it (one `send_and_receive`), to `out`.

With `reply-poll` > 0 the workflow's exchanges pull replies every that many
seconds, through the same function securediff's ServerApp uses
(securediff/flower/apps.py `send_and_receive`), instead of Grid.send_and_receive's
fixed 3 s: Flower's protocol with securediff's polling, to tell the two apart.

Run config: `out`, `rounds`, `nodes`, `length`, `num-shares`, `threshold`,
`clipping-range`, `stage-timeout`, `reply-poll` (0: Flower's Grid as it is).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid, ServerApp


class _Vector(NumPyClient):
    def __init__(self, node_id: int, length: int) -> None:
        gen = np.random.default_rng(node_id % 2**32)
        self.vector = (0.1 * gen.standard_normal(length)).astype(np.float32)

    def fit(self, parameters, config):
        return [self.vector], 1, {}


def _client_fn(context: Context):
    return _Vector(context.node_id, int(context.run_config["length"])).to_client()


client_app = ClientApp(client_fn=_client_fn, mods=[secaggplus_mod])
server_app = ServerApp()


class _Proxy(ClientProxy):
    def get_properties(self, *a, **kw): ...
    def get_parameters(self, *a, **kw): ...
    def fit(self, *a, **kw): ...
    def evaluate(self, *a, **kw): ...
    def reconnect(self, *a, **kw): ...


class _EveryNode(Strategy):
    """Samples every node for fit and keeps the aggregate it is given."""

    def __init__(self, node_ids: list[int]) -> None:
        self.proxies = []
        for nid in node_ids:
            proxy = _Proxy(str(nid))
            proxy.node_id = nid
            self.proxies.append(proxy)
        self.result = None

    def initialize_parameters(self, client_manager):
        return None

    def configure_fit(self, server_round, parameters, client_manager):
        return [(p, FitIns(parameters, {})) for p in self.proxies]

    def aggregate_fit(self, server_round, results, failures):
        if not results:
            return None, {}
        self.result = parameters_to_ndarrays(results[0][1].parameters)[0]
        return results[0][1].parameters, {}

    def configure_evaluate(self, *a):
        return []

    def aggregate_evaluate(self, *a):
        return None, {}

    def evaluate(self, *a):
        return None


class _TimedGrid:
    """The Grid, with the seconds of each send_and_receive (one exchange) recorded;
    `poll` > 0: replies pulled every `poll` seconds (see the module docstring)."""

    def __init__(self, grid: Grid, poll: float = 0.0) -> None:
        self._grid = grid
        self.poll = poll
        self.timings: list[list] = []

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        started = time.perf_counter()
        if self.poll > 0:
            from securediff.flower.apps import send_and_receive

            replies = send_and_receive(self._grid, list(messages), timeout=timeout, poll=self.poll)
        else:
            replies = self._grid.send_and_receive(messages, timeout=timeout)
        self.timings.append(["exchange", round(time.perf_counter() - started, 3)])
        return replies


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    rounds, nodes, length = int(cfg["rounds"]), int(cfg["nodes"]), int(cfg["length"])
    deadline = time.monotonic() + 120
    while len(grid.get_node_ids()) < nodes and time.monotonic() < deadline:
        time.sleep(0.5)
    node_ids = sorted(grid.get_node_ids())[:nodes]
    strategy = _EveryNode(node_ids)
    legacy = LegacyContext(context, strategy=strategy)
    workflow = SecAggPlusWorkflow(num_shares=int(cfg["num-shares"]),
                                  reconstruction_threshold=int(cfg["threshold"]),
                                  clipping_range=float(cfg["clipping-range"]),
                                  timeout=float(cfg["stage-timeout"]))
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([np.zeros(length, np.float32)]), True)
    log = []
    for r in range(1, rounds + 1):
        legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: r})
        strategy.result = None
        timed = _TimedGrid(grid, float(cfg.get("reply-poll", 0.0)))
        t0 = time.perf_counter()
        workflow(timed, legacy)
        log.append({"round": r, "seconds": time.perf_counter() - t0,
                    "exchange_seconds": timed.timings,
                    "outcome": "aggregated" if strategy.result is not None else "halted"})
    out = Path(str(cfg["out"]))
    out.write_text(json.dumps({"nodes": node_ids, "rounds": log}, indent=2) + "\n")
