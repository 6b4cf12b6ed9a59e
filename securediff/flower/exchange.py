"""What travels in one Flower message, independent of Flower itself.

The protocol's own messages travel as their canonical bytes (`protocols.messages`)
inside the request and reply dicts below, together with the client-signed
transcript records; `apps.py` only moves these dicts in a Flower `ConfigRecord`.

Requests (server -> node) carry `kind`:

- `hello`: `nonce` and the aggregator's `securediff` version; the node answers
  with its `client_id` and a signature of the nonce with its roster key, or
  refuses when its own installation is another version (each party runs its own
  installation: cli/flower_app.py).
- `step`: deliver the server-stage messages addressed to this client since its
  last step (`deliver_stages`, `deliver_payloads`, empty bytes for none), then
  run client stage `stage` and answer its message `payload` and signed `record`.
- `close`: deliver the last server-stage messages, then co-sign `statement`
  over the record list `records`; the node answers its `cosig`.

In a training run, the round's `train` request (`shared_model.py`) rides with
the first `step` of the round, its fields prefixed with `train_` (`kind` and
`round` are the step's): the node trains, then answers the step; its reply
carries the training's reply fields with the same prefix.

Every request also names the round (`round`, `session`, `setup`: the protocol,
its parameters and the round's public set-up, as canonical JSON) and the chain
head the transcript holds for the client (`head_seq`, -1 for none; `head_digest`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from protocols.messages import canonical_json
from protocols.stages import AggregationProtocol, RoundSetup, VectorSpec

HELLO_DOMAIN = b"securediff/flower/hello/v1\n"


def installed_version() -> str:
    """This party's securediff version, as its installation records it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("securediff")
    except PackageNotFoundError:
        return "unknown (not installed)"
TRAIN_PREFIX = "train_"  # a ConfigRecord holds no nesting: a train request, flattened
Request = dict[str, Any]
Reply = dict[str, Any]


def setup_json(protocol: AggregationProtocol, setup: RoundSetup) -> str:
    return canonical_json({
        "protocol": protocol.name,
        "params": protocol.params,
        "round": setup.round_index,
        "aggregator": setup.aggregator_id,
        "participants": list(setup.participants),
        "length": setup.vector.length,
        "dtype": setup.vector.dtype,
        "threshold": setup.threshold,
        "binding": setup.binding,
    }).decode("ascii")


def parse_setup(text: str) -> tuple[str, dict[str, Any], RoundSetup]:
    obj = json.loads(text)
    setup = RoundSetup(
        protocol=obj["protocol"],
        round_index=int(obj["round"]),
        aggregator_id=obj["aggregator"],
        participants=tuple(obj["participants"]),
        vector=VectorSpec(length=int(obj["length"]), dtype=obj["dtype"]),
        threshold=int(obj["threshold"]),
        binding=str(obj.get("binding", "")),
    )
    return obj["protocol"], dict(obj["params"]), setup


def head_fields(head: tuple[int, str] | None) -> dict[str, Any]:
    return {"head_seq": -1, "head_digest": ""} if head is None else {
        "head_seq": head[0], "head_digest": head[1]}


def read_head(request: Mapping[str, Any]) -> tuple[int, str] | None:
    seq = int(request["head_seq"])
    return None if seq < 0 else (seq, str(request["head_digest"]))
