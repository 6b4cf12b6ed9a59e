"""Protocols by name. Entries are imported lazily, so naming `plain` never loads
the heavier dependencies (TenSEAL) of a protocol that is not used."""

from __future__ import annotations

import importlib
from typing import Any

from protocols.errors import ProtocolInputError
from protocols.stages import AggregationProtocol

# name -> "module:class"; a new protocol joins the contract tests by adding a line here.
_PROTOCOLS: dict[str, str] = {
    "plain": "protocols.plain:PlainProtocol",
    "secagg": "protocols.secagg.protocol:SecAggProtocol",
    "ckks": "protocols.ckks.protocol:CkksProtocol",
    "tee": "protocols.tee.protocol:TeeProtocol",
}


def protocol_names() -> tuple[str, ...]:
    return tuple(sorted(_PROTOCOLS))


def protocol_class(name: str) -> type[AggregationProtocol]:
    target = _PROTOCOLS.get(name)
    if target is None:
        raise ProtocolInputError(f"unknown protocol {name!r}; known: {', '.join(protocol_names())}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_protocol(name: str, **params: Any) -> AggregationProtocol:
    """Build a protocol from its name and keyword parameters (as the transcript records them)."""
    cls = protocol_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ProtocolInputError(f"bad parameters for protocol {name!r}: {exc}") from None
