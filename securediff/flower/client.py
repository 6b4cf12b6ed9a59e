"""Builds a `ClientNode` from a SuperNode's node config and the run config.

Node config (`flower-supernode --node-config`): `client-id` (as the roster
names it), `identity-key` (this organisation's key file, never sent anywhere),
`roster` (the pinned roster, obtained out of band); the protocol policy of
`policy.py` (`protocols`, `min-survivors`, `ckks-min-flood-bits`, `tee-allow`,
`tee-min-svn`, `tee-production`); for training runs (run
config `inputs = "train"`, the default) also `state-dir` and the data settings
of `trainer.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocols.hazmat.keyfile import read_key_file
from protocols.remote import PartyIdentities
from protocols.roster import load_rosters
from securediff.errors import ConfigError
from securediff.flower.exchange import TRAIN_PREFIX
from securediff.flower.inputs import seeded_vectors
from securediff.flower.node import ClientNode
from securediff.flower.node_settings import NodeSettings, update_source
from securediff.flower.policy import NodePolicy


def node_from_config(node_config: Mapping[str, Any], run_config: Mapping[str, Any],
                     state: dict[str, Any]) -> ClientNode:
    missing = [k for k in ("client-id", "identity-key", "roster") if not node_config.get(k)]
    if missing:
        raise ConfigError(f"node config lacks {', '.join(missing)} (flower-supernode --node-config)")
    cid = str(node_config["client-id"])
    identities = PartyIdentities(load_rosters(str(node_config["roster"]))[-1], party=cid,
                                 key=read_key_file(str(node_config["identity-key"])))
    seed = int(run_config.get("insecure-seed", -1))
    inputs = run_config.get("inputs", "train")
    policy = NodePolicy.from_node_config(node_config)
    if inputs == "train":
        settings = NodeSettings.from_configs(cid, node_config, run_config)
        return ClientNode(identities=identities, inputs=update_source(settings.state_dir, cid),
                          state=state, insecure_seed=settings.insecure_seed, policy=policy)
    if inputs != "test-vectors" or seed < 0:
        raise ConfigError("run config inputs must be train, or test-vectors with "
                          "insecure-seed >= 0 (the insecure deterministic test mode)")
    return ClientNode(identities=identities, inputs=seeded_vectors(seed, cid), state=state,
                      insecure_seed=seed, policy=policy)


def handle_request(node_config: Mapping[str, Any], run_config: Mapping[str, Any],
                   state: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """One request to this node: training requests go to its `NodeTrainer`, protocol
    requests to its `ClientNode` (which updates `state` in place)."""
    node = node_from_config(node_config, run_config, state)
    if request.get("kind") in ("describe", "train"):
        return _train(node.client_id, node_config, run_config, request)
    if TRAIN_PREFIX + "run" in request:
        # The round's training rides with its first protocol stage: train first (the
        # update the stage reads is written to state-dir), then answer the stage.
        train = {k.removeprefix(TRAIN_PREFIX): v for k, v in request.items()
                 if k.startswith(TRAIN_PREFIX)}
        trained = _train(node.client_id, node_config, run_config,
                         {**train, "kind": "train", "round": request["round"]})
        step = {k: v for k, v in request.items() if not k.startswith(TRAIN_PREFIX)}
        return {**{TRAIN_PREFIX + k: v for k, v in trained.items()}, **node.handle(step)}
    return node.handle(request)


def _train(client_id: str, node_config: Mapping[str, Any], run_config: Mapping[str, Any],
           request: dict[str, Any]) -> dict[str, Any]:
    if run_config.get("inputs", "train") != "train":
        raise ConfigError("a training request in a run without inputs = train")
    # Only here: the trainer imports torch and opacus, seconds in every ClientApp
    # process (one per message), which the protocol stages do without.
    from securediff.flower.trainer import NodeTrainer

    settings = NodeSettings.from_configs(client_id, node_config, run_config)
    return NodeTrainer(settings).handle(request)
