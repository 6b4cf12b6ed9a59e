"""Training across machines without Flower's processes: the real ServerApp code
(`run_aggregator`) drives three nodes built from their node config, one fresh
node per request (as Flower starts one ClientApp process per message), through a
stand-in for the Grid that deep-copies every request. The nodes train a tiny PFDM
shared model on their digits partitions with private randomness and aggregate
with secagg; the Flower deployment itself is test_flower_secagg.py."""

from __future__ import annotations

import copy
import json
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from cli.app import app
from protocols import ClientInput, check_against_plain, make_protocol
from protocols.driver import RoundResult
from securediff.errors import ConfigError, PrivacyError
from securediff.flower.apps import GridExchange
from securediff.flower.client import handle_request
from securediff.flower.exchange import TRAIN_PREFIX
from securediff.flower.keys import keygen, make_roster
from securediff.flower.server import AggregatorSettings, run_aggregator
from securediff.privacy.ledger import PrivacyLedger

CLIENTS = [f"client-{i:02d}" for i in range(3)]
ROUNDS = 2
TINY = """
[model]
base_channels = 8
channel_mults = [1, 2]
[federation]
local_steps = 3
update_clip = 0.0
[training]
batch_size = 32
personal_steps = 4
"""


class DirectExchange(GridExchange):
    """The Grid's part of `GridExchange`, answered by calling the nodes directly.
    Records each node's update as it left its `train` request (test-only insight)."""

    def __init__(self, node_configs: dict[int, dict], run_config: dict) -> None:
        super().__init__(grid=None, timeout=30.0)
        self.node_configs, self.run_config = node_configs, run_config
        self.states: dict[int, dict] = {n: {} for n in node_configs}
        self.sent_weights: dict[int, bytes] = {}
        self.updates: dict[int, dict[str, ClientInput]] = {}
        self.exchanges: Counter[str] = Counter()  # Flower exchanges (send_and_receive) per group

    def node_ids(self) -> list[int]:
        return sorted(self.node_configs)

    def to_nodes(self, requests, group, timeout=None):
        self.exchanges[group] += 1
        replies = {}
        for node, req in requests.items():
            try:
                replies[node] = handle_request(self.node_configs[node], self.run_config,
                                               self.states[node], copy.deepcopy(req))
            except Exception as exc:  # noqa: BLE001 (Flower turns it into an error reply)
                replies[node] = {"error": f"{type(exc).__name__}: {exc}"}
            # The train request alone, or riding with the round's first protocol step.
            train, trained = req, replies[node]
            if req.get("kind") != "train":
                train = {k.removeprefix(TRAIN_PREFIX): v for k, v in req.items()
                         if k.startswith(TRAIN_PREFIX)}
                trained = {k.removeprefix(TRAIN_PREFIX): v for k, v in trained.items()
                           if k.startswith(TRAIN_PREFIX)}
            if train.get("share") and "error" not in replies[node]:
                self.sent_weights[req["round"]] = bytes(train["weights"])
                state_dir = Path(self.node_configs[node]["state-dir"])
                update = load_file(str(state_dir / "update.safetensors"))["update"]
                cid = self.node_configs[node]["client-id"]
                self.updates.setdefault(req["round"], {})[cid] = ClientInput(
                    vector=update, weight=float(trained["weight"]))
        return replies


@pytest.fixture()
def deployment(tmp_path: Path):
    keys = tmp_path / "keys"
    keygen(["aggregator", *CLIENTS], keys)
    make_roster(sorted(keys.glob("*.pub")), aggregator="aggregator", out=keys / "roster.json")
    (tmp_path / "tiny.toml").write_text(TINY)
    node_configs = {
        10 + i: {"client-id": cid, "identity-key": str(keys / f"{cid}.key"),
                 "roster": str(keys / "roster.json"), "state-dir": str(tmp_path / "node" / cid),
                 "dataset": "digits", "partition-id": i, "num-partitions": len(CLIENTS)}
        for i, cid in enumerate(CLIENTS)
    }
    run_config = {"run-dir": str(tmp_path / "run"), "roster": str(keys / "roster.json"),
                  "aggregator-key": str(keys / "aggregator.key"), "protocol": "secagg",
                  "rounds": ROUNDS, "min-nodes": len(CLIENTS), "stage-timeout": 30.0,
                  "config": str(tmp_path / "tiny.toml"), "inputs": "train"}
    return node_configs, run_config


def test_nodes_train_on_their_partitions_and_the_aggregate_moves_the_shared_model(deployment):
    node_configs, run_config = deployment
    exchange = DirectExchange(node_configs, run_config)
    summary = run_aggregator(AggregatorSettings.from_run_config(run_config), exchange)
    run_dir = Path(run_config["run-dir"])

    assert summary["mode"] == "private" and summary["inputs"] == "train"
    assert [r["outcome"] for r in summary["rounds"]] == ["aggregated"] * ROUNDS, summary
    aggregates = load_file(str(run_dir / "aggregates.safetensors"))
    protocol = make_protocol("secagg")

    for r, log in enumerate(summary["rounds"]):
        assert log["contributors"] == CLIENTS
        # The training rides with AdvertiseKeys: five protocol stages and the close.
        assert exchange.exchanges[str(r)] == 6
        inputs = exchange.updates[r]
        # The released aggregate is the weighted sum of the updates the nodes trained.
        result = RoundResult(weighted_sum=aggregates[f"round-{r}"], total_weight=log["total_weight"],
                             survivors=tuple(CLIENTS), dropped=(), contributors=tuple(CLIENTS),
                             bytes_up=0, bytes_down=0, stats={})
        check = check_against_plain(protocol, inputs, result)
        assert check["ok"], check
        assert log["total_weight"] == sum(i.weight for i in inputs.values())
        assert all(np.linalg.norm(i.vector) > 0 for i in inputs.values())
        # The shared model moved by exactly the released weighted mean.
        before = np.frombuffer(exchange.sent_weights[r], dtype="<f4").astype(np.float64)
        after = (np.frombuffer(exchange.sent_weights[r + 1], dtype="<f4").astype(np.float64)
                 if r + 1 < ROUNDS else _shared_vector(run_dir, exchange))
        step = aggregates[f"round-{r}"] / log["total_weight"]
        assert np.abs(after - (before + step)).max() <= 1e-6 * (1 + np.abs(before).max())
        assert np.abs(step).max() > 1e-4

    verify = CliRunner().invoke(app, ["transcript", "verify", str(run_dir), "--json"])
    assert verify.exit_code == 0, verify.output
    assert json.loads(verify.output)["rounds"] == ROUNDS

    for node in node_configs.values():
        state_dir = Path(node["state-dir"])
        ledger = PrivacyLedger.from_dict(json.loads((state_dir / "ledger.json").read_text()))
        # Noised once for the whole run: one forward-noise charge, at the run's t0.
        assert [e.kind for e in ledger.events] == ["forward_noise"]
        assert ledger.events[0].data_id == f"{node['client-id']}/members"
        assert 0 < ledger.epsilon("shared") <= 10.0
        assert (state_dir / "runs" / summary["run_id"] / "personal.safetensors").exists()


def _shared_vector(run_dir: Path, exchange: DirectExchange) -> np.ndarray:
    """The saved final shared model, flattened in the order of the weights sent."""
    from securediff.federation.strategies import flat
    from securediff.flower.agreement import model_setup, parse_config
    from securediff.models.unet import UNet
    from securediff.storage import load_tensors

    cfg = parse_config((run_dir / "config.toml").read_text())
    model = UNet(model_setup(cfg, in_channels=1, image_size=8, num_classes=10, t0=1).spec)
    model.load_state_dict(load_tensors(run_dir / "shared-model.safetensors"))
    return flat(model.parameters())


def test_a_node_refuses_what_it_did_not_allow(deployment, tmp_path):
    node_configs, run_config = deployment
    node = node_configs[10]
    describe = {"kind": "describe", "round": "describe", "config": TINY}
    reply = handle_request(node, run_config, {}, dict(describe))
    assert (reply["in_channels"], reply["image_size"], reply["num_classes"]) == (1, 8, 10)
    assert reply["private"] is True
    with pytest.raises(ConfigError, match="allow-insecure-seed"):
        handle_request(node, {**run_config, "insecure-seed": 3}, {}, dict(describe))
    with pytest.raises(PrivacyError, match="max-epsilon"):
        handle_request({**node, "max-epsilon": 2.0}, run_config, {}, dict(describe))
    with pytest.raises(ConfigError, match="state-dir"):
        handle_request({k: v for k, v in node.items() if k != "state-dir"}, run_config, {},
                       dict(describe))


def test_supernode_command_is_a_training_node_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the key and roster the command names exist (it checks)
    (tmp_path / "k.key").write_text("placeholder")
    (tmp_path / "roster.json").write_text("{}")
    base = ["flower", "supernode", "--client-id", "client-01", "--identity-key", "k.key",
            "--roster", "roster.json", "--superlink", "127.0.0.1:9092", "--dry-run"]
    runner = CliRunner()
    refused = runner.invoke(app, base)
    assert refused.exit_code == 2 and "--state-dir" in refused.output
    ok = runner.invoke(app, [*base, "--state-dir", str(tmp_path / "st"), "--partition-id", "1",
                             "--num-partitions", "3"])
    assert ok.exit_code == 0, ok.output
    argv = shlex.split(ok.output)
    node_config = argv[argv.index("--node-config") + 1]
    assert f"state-dir='{tmp_path / 'st'}'" in node_config
    assert "partition-id=1 num-partitions=3" in node_config
    assert runner.invoke(app, [*base, "--dataset", "mnist-idx", "--state-dir", "s"]).exit_code == 2
    assert "state-dir" not in runner.invoke(app, [*base, "--test-vectors"]).output


def test_a_node_that_refuses_the_run_is_left_out_and_too_few_abort_the_round(deployment):
    node_configs, run_config = deployment
    node_configs[12]["max-epsilon"] = 2.0  # the run's forward noise costs more
    run_config = {**run_config, "rounds": 1, "min-nodes": 2}
    summary = run_aggregator(AggregatorSettings.from_run_config(run_config),
                             DirectExchange(node_configs, run_config))
    (log,) = summary["rounds"]
    assert log["selected"] == CLIENTS[:2]  # client-02 did not describe its data
    assert log["outcome"] == "aborted" and "at least 3 clients" in log["reason"]
    verify = CliRunner().invoke(app, ["transcript", "verify", run_config["run-dir"], "--json"])
    assert verify.exit_code == 0, verify.output
    assert json.loads(verify.output)["aborted_rounds"] == 1
