"""Builds a `ClientNode` from a SuperNode's node config and the run config.

Node config (`flower-supernode --node-config`): `client-id` (as the roster
names it), `identity-key` (this organisation's key file, never sent anywhere),
`roster` (the pinned roster, obtained out of band).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocols.hazmat.keyfile import read_key_file
from protocols.remote import PartyIdentities
from protocols.roster import load_rosters
from securediff.errors import ConfigError
from securediff.flower.inputs import seeded_vectors
from securediff.flower.node import ClientNode


def node_from_config(node_config: Mapping[str, Any], run_config: Mapping[str, Any],
                     state: dict[str, Any]) -> ClientNode:
    missing = [k for k in ("client-id", "identity-key", "roster") if not node_config.get(k)]
    if missing:
        raise ConfigError(f"node config lacks {', '.join(missing)} (flower-supernode --node-config)")
    cid = str(node_config["client-id"])
    identities = PartyIdentities(load_rosters(str(node_config["roster"]))[-1], party=cid,
                                 key=read_key_file(str(node_config["identity-key"])))
    seed = int(run_config.get("insecure-seed", -1))
    if run_config.get("inputs", "test-vectors") != "test-vectors" or seed < 0:
        raise ConfigError("this version feeds nodes only from the insecure deterministic "
                          "test mode's vectors: set insecure-seed >= 0 and inputs = test-vectors")
    return ClientNode(identities=identities, inputs=seeded_vectors(seed, cid), state=state,
                      insecure_seed=seed)
