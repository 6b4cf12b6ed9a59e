"""What a node's protocol round needs of its training, without the training itself.

Flower starts a ClientApp process per message, so every import is paid on every
message: the protocol stages of a training run read the node's settings and its
pending update from here, and only `describe` and `train` import `trainer.py`
(and with it torch and opacus, seconds per message).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.errors import ProtocolAbort
from protocols.secagg.answers import FileAnswerLog
from protocols.stages import ClientInput, RoundSetup
from securediff.errors import ConfigError

# node-config key -> [data] key of the securediff config
_DATA_KEYS = {"dataset": "dataset", "data-path": "path", "num-partitions": "num_clients",
              "partition": "partition", "alpha": "alpha", "shards-per-client": "shards_per_client",
              "quantity-sigma": "quantity_sigma", "partition-seed": "partition_seed",
              "holdout-fraction": "holdout_fraction", "test-fraction": "test_fraction"}


@dataclass(frozen=True)
class NodeSettings:
    client_id: str
    state_dir: Path
    data: dict[str, Any]  # [data] overrides
    partition_id: int
    max_epsilon: float
    insecure_seed: int | None  # only where the node allows it

    @classmethod
    def from_configs(cls, client_id: str, node_config: Mapping[str, Any],
                     run_config: Mapping[str, Any]) -> NodeSettings:
        if not node_config.get("state-dir"):
            raise ConfigError("node config lacks state-dir (a node-local directory for the "
                              "ledger, noised data and personal model)")
        data = {v: node_config[k] for k, v in _DATA_KEYS.items() if k in node_config}
        data.setdefault("num_clients", 1)
        part = int(node_config.get("partition-id", 0))
        if not 0 <= part < int(data["num_clients"]):
            raise ConfigError(f"node config partition-id = {part} is not in "
                              f"[0, num-partitions = {data['num_clients']})")
        seed = int(run_config.get("insecure-seed", -1))
        if seed >= 0 and not bool(node_config.get("allow-insecure-seed", False)):
            raise ConfigError("the run asks for the insecure deterministic test mode "
                              "(insecure-seed); this node does not allow it "
                              "(node config allow-insecure-seed = true)")
        return cls(client_id=client_id, state_dir=Path(str(node_config["state-dir"])),
                   data=data, partition_id=part,
                   max_epsilon=float(node_config.get("max-epsilon", 10.0)),
                   insecure_seed=None if seed < 0 else seed)

    @property
    def private(self) -> bool:
        return self.insecure_seed is None


def update_source(state_dir: Path, client_id: str):
    """The `InputSource` of a training node: the update its last `train` left."""

    def source(setup: RoundSetup) -> ClientInput:
        path = Path(state_dir) / "update.safetensors"
        if not path.exists():
            raise ProtocolAbort(f"{client_id}: no trained update for round {setup.round_index}")
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as fh:
            meta = fh.metadata() or {}
            vector = fh.get_tensor("update")
        if int(meta.get("round", -1)) != setup.round_index or vector.size != setup.vector.length:
            raise ProtocolAbort(f"{client_id}: the trained update is not round "
                                f"{setup.round_index}'s ({setup.vector.length} values)")
        # One round set-up per trained update, recorded on disk before anything of it
        # leaves: a restarted node, or a new Flower run at the same round index, cannot
        # be made to mask and unmask the same update again over another survivor list.
        FileAnswerLog(Path(state_dir) / "answers.jsonl").claim(
            client_id, f"run {meta.get('run')}, round {setup.round_index}")
        return ClientInput(vector=vector.astype(setup.vector.dtype), weight=float(meta["weight"]))

    return source
