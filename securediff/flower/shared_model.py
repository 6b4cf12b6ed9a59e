"""The aggregator's shared model in a training run across machines.

Per round, as `securediff train` does in process: sample clients, send the
shared weights to every node (`train`: the sampled ones train the shared part
and keep the update for the protocol round; every node trains its personal
part), run the protocol round over the nodes whose training succeeded, and
move the shared model by the released weighted mean. The aggregator sees the
weights it sends and the aggregate, nothing else.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protocols.driver import RoundResult
from protocols.errors import ProtocolError
from securediff.config import Config
from securediff.errors import ConfigError
from securediff.federation.runner import build_strategy
from securediff.flower.plan import check_supported, encode_weights, model_plan, weights_digest
from securediff.rng import RandomSource
from securediff.storage import save_tensors

Exchange = Callable[..., Mapping[str, Mapping[str, Any]]]
_SHAPE_KEYS = ("in_channels", "image_size", "num_classes", "t0")


class SharedModelServer:
    def __init__(self, config: Config, *, exchange: Exchange, source: RandomSource,
                 train_timeout: float) -> None:
        self.config = check_supported(config)
        self.config_text = config.to_toml()
        self.exchange = exchange
        self.source = source
        self.train_timeout = train_timeout
        self.run_id = secrets.token_hex(8)  # names each node's per-run state directory
        self.strategy = None
        self.members: dict[str, int] = {}
        self.private_nodes: dict[str, bool] = {}

    @property
    def length(self) -> int:
        return int(self.strategy.global_vector().size)

    def describe(self, clients: Sequence[str]) -> list[str]:
        """Ask every node what it would train on; build the shared model for it.
        Nodes that do not answer are left out; nodes that disagree stop the run."""
        replies = self.exchange({c: {"kind": "describe", "round": "describe",
                                     "config": self.config_text} for c in clients},
                                timeout=self.train_timeout)
        shapes = {}
        for cid in clients:
            reply = replies.get(cid)
            if reply is None or "error" in reply:
                continue
            shapes[cid] = tuple(int(reply[k]) for k in _SHAPE_KEYS)
            self.members[cid] = int(reply["members"])
            self.private_nodes[cid] = bool(reply["private"])
        if not shapes:
            why = {c: (replies.get(c) or {}).get("error", "no reply") for c in clients}
            raise ProtocolError(f"no node could describe its data: {why}")
        if len(set(shapes.values())) > 1:
            raise ConfigError(f"the nodes' data disagree on (channels, size, classes, t0): {shapes}")
        c, h, k, t0 = next(iter(shapes.values()))
        plan = model_plan(self.config, in_channels=c, image_size=h, num_classes=k, t0=t0)
        self.strategy = build_strategy(plan)
        # The label the in-process runner initialises its shared model from.
        self.strategy.init_global(self.source.child("init").torch_generator())
        return sorted(shapes)

    def select(self, round_index: int, clients: Sequence[str]) -> list[str]:
        """`federation.client_fraction` of the clients, drawn as the in-process runner draws."""
        k = max(1, round(self.config.federation.client_fraction * len(clients)))
        if k == len(clients):
            return list(clients)
        rng = self.source.child(f"client-sampling/round-{round_index}").numpy_generator()
        order = rng.permutation(len(clients))
        return [clients[i] for i in sorted(order[:k])]

    def train(self, round_index: int, clients: Sequence[str], selected: Sequence[str]
              ) -> tuple[list[str], dict[str, Any]]:
        """Send the shared weights; the sampled nodes that trained an update of the
        right length are the protocol round's participants."""
        weights = encode_weights(self.strategy.global_vector())
        common = {"kind": "train", "round": round_index, "run": self.run_id,
                  "config": self.config_text, "weights_sha256": weights_digest(weights)}
        requests = {c: {**common, "share": c in selected,
                        "weights": weights if c in selected else b""} for c in clients}
        replies = self.exchange(requests, timeout=self.train_timeout)
        participants, info = [], {"failed": {}, "epsilon": {}, "update_norms": {}}
        for cid in clients:
            reply = replies.get(cid)
            if reply is None or "error" in reply:
                info["failed"][cid] = (reply or {}).get("error", "no reply to train")
                continue
            info["epsilon"][cid] = reply.get("epsilon")
            self.private_nodes[cid] = bool(reply.get("private"))
            if cid in selected:
                if int(reply.get("length", -1)) != self.length:
                    info["failed"][cid] = f"an update of {reply.get('length')} values"
                    continue
                participants.append(cid)
                info["update_norms"][cid] = float(reply["update_norm"])
        return participants, info

    def apply(self, result: RoundResult) -> np.ndarray:
        """Move the shared model by the released weighted mean (as in process)."""
        mean = np.asarray(result.weighted_sum, dtype=np.float64) / result.total_weight
        self.strategy.apply_global(self.strategy.global_vector() + mean)
        return mean

    def save(self, path: Path, round_index: int) -> str:
        state = self.strategy.global_model.state_dict()
        return save_tensors(path, state, {"round": str(round_index), "t0": str(self.strategy.t0)})
