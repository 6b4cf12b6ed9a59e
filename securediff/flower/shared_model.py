"""The aggregator's shared model in a training run across machines.

Per round, as `securediff train` does in process: sample clients, send the
shared weights to every node (`train`: the sampled ones train the shared part
and keep the update for the protocol round; every node trains its personal
part), run the protocol round over the sampled nodes, and move the shared model
by the released weighted mean. The training request rides with the round's
first protocol request (`TrainingExchange`): a sampled node whose training
fails is dropped before the protocol's first stage. The aggregator sees the
weights it sends and the aggregate, nothing else.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protocols.driver import RoundResult
from protocols.errors import ProtocolError
from securediff.config import Config
from securediff.errors import ConfigError
from securediff.federation.runner import build_strategy
from securediff.flower.agreement import check_supported, encode_weights, model_setup, weights_digest
from securediff.flower.exchange import TRAIN_PREFIX
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
        setup = model_setup(self.config, in_channels=c, image_size=h, num_classes=k, t0=t0)
        self.strategy = build_strategy(setup)
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

    def train_requests(self, round_index: int, clients: Sequence[str],
                       selected: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The shared weights for the sampled nodes; every node trains its personal part."""
        weights = encode_weights(self.strategy.global_vector())
        common = {"kind": "train", "round": round_index, "run": self.run_id,
                  "config": self.config_text, "weights_sha256": weights_digest(weights)}
        return {c: {**common, "share": c in selected,
                    "weights": weights if c in selected else b""} for c in clients}

    def train_replies(self, replies: Mapping[str, Mapping[str, Any]], clients: Sequence[str],
                      selected: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
        """The sampled nodes that trained an update of the right length, and the log."""
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

    def train(self, round_index: int, clients: Sequence[str], selected: Sequence[str]
              ) -> tuple[list[str], dict[str, Any]]:
        """Send the shared weights in an exchange of their own; the sampled nodes that
        trained an update of the right length are the protocol round's participants."""
        replies = self.exchange(self.train_requests(round_index, clients, selected),
                                timeout=self.train_timeout)
        return self.train_replies(replies, clients, selected)

    def round_exchange(self, round_index: int, clients: Sequence[str],
                       selected: Sequence[str]) -> TrainingExchange:
        """The round's exchange with the training riding on its first protocol stage."""
        return TrainingExchange(self, round_index, clients, selected)

    def apply(self, result: RoundResult) -> np.ndarray:
        """Move the shared model by the released weighted mean (as in process)."""
        mean = np.asarray(result.weighted_sum, dtype=np.float64) / result.total_weight
        self.strategy.apply_global(self.strategy.global_vector() + mean)
        return mean

    def save(self, path: Path, round_index: int) -> str:
        state = self.strategy.global_model.state_dict()
        return save_tensors(path, state, {"round": str(round_index), "t0": str(self.strategy.t0)})


class TrainingExchange:
    """The exchange of one protocol round whose first request also carries the
    round's training: each sampled node trains on the shared weights and answers
    the first client stage in the same message (one Flower exchange fewer per
    round). The sampled nodes are the round's participants; one whose training
    fails answers an error and is dropped before the protocol's first stage, as
    any node lost there. Nodes not sampled get the training request alone, in the
    same exchange. `finish` sends the training alone if no protocol request went
    out (a round refused before its first message), and returns the training log.
    """

    def __init__(self, model: SharedModelServer, round_index: int, clients: Sequence[str],
                 selected: Sequence[str]) -> None:
        self.model, self.clients, self.selected = model, list(clients), list(selected)
        self.pending: dict[str, dict[str, Any]] | None = model.train_requests(
            round_index, clients, selected)
        self.replies: dict[str, Mapping[str, Any]] = {}
        self.seconds = 0.0

    def __call__(self, requests: Mapping[str, Mapping[str, Any]],
                 timeout: float | None = None) -> Mapping[str, Mapping[str, Any]]:
        if self.pending is None:
            return self.model.exchange(requests, timeout=timeout)
        train, self.pending = self.pending, None
        merged = {c: {**req, **{TRAIN_PREFIX + k: v for k, v in train[c].items()
                                if k not in ("kind", "round")}}
                  for c, req in requests.items()}
        merged.update({c: t for c, t in train.items() if c not in requests})
        t0 = time.perf_counter()
        answers = self.model.exchange(merged, timeout=self.model.train_timeout)
        self.seconds = time.perf_counter() - t0
        out = {}
        for cid, reply in answers.items():
            if cid not in requests or "error" in reply:
                self.replies[cid] = reply
            else:
                self.replies[cid] = {k.removeprefix(TRAIN_PREFIX): v for k, v in reply.items()
                                     if k.startswith(TRAIN_PREFIX)}
            if cid in requests:
                out[cid] = {k: v for k, v in reply.items() if not k.startswith(TRAIN_PREFIX)}
        return out

    def finish(self) -> dict[str, Any]:
        """The training log of the round (`training`, `train_seconds`)."""
        if self.pending is not None:
            t0 = time.perf_counter()
            self.replies = dict(self.model.exchange(self.pending,
                                                    timeout=self.model.train_timeout))
            self.seconds, self.pending = time.perf_counter() - t0, None
        _, info = self.model.train_replies(self.replies, self.clients, self.selected)
        return {"training": info, "train_seconds": self.seconds}
