"""Blind aggregation protocols over flat numeric vectors, and their transcripts.

The federation loop calls `run_round(make_protocol(name, **params), ...)` and
divides the weighted sum by the total weight itself. Nothing here knows about
torch or models.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Where each name lives, loaded on first use (PEP 562) rather than by `import
# protocols`: a Flower ClientApp process, one per message, needs a few submodules
# and would otherwise load the driver, the round engine and the whole transcript
# package with them.
_HOME = {
    "RoundResult": "protocols.driver", "check_against_plain": "protocols.driver",
    "run_round": "protocols.driver",
    "MessageDecodeError": "protocols.errors", "ProtocolAbort": "protocols.errors",
    "ProtocolError": "protocols.errors", "ProtocolInputError": "protocols.errors",
    "RosterError": "protocols.errors", "TranscriptError": "protocols.errors",
    "FORMAT_VERSION": "protocols.messages", "MAX_MESSAGE_BYTES": "protocols.messages",
    "Message": "protocols.messages", "decode": "protocols.messages",
    "encode": "protocols.messages",
    "make_protocol": "protocols.registry", "protocol_names": "protocols.registry",
    "Identities": "protocols.roster", "Roster": "protocols.roster",
    "load_rosters": "protocols.roster", "save_roster": "protocols.roster",
    "Aggregate": "protocols.stages", "AggregationProtocol": "protocols.stages",
    "ClientInput": "protocols.stages", "StageSpec": "protocols.stages",
    "VectorSpec": "protocols.stages",
    "TranscriptProblem": "protocols.transcript", "TranscriptReport": "protocols.transcript",
    "TranscriptWriter": "protocols.transcript", "verify_transcript": "protocols.transcript",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'protocols' has no attribute {name!r}")
    value = getattr(import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


if TYPE_CHECKING:
    from protocols.driver import RoundResult, check_against_plain, run_round
    from protocols.errors import (
        MessageDecodeError,
        ProtocolAbort,
        ProtocolError,
        ProtocolInputError,
        RosterError,
        TranscriptError,
    )
    from protocols.messages import FORMAT_VERSION, MAX_MESSAGE_BYTES, Message, decode, encode
    from protocols.registry import make_protocol, protocol_names
    from protocols.roster import Identities, Roster, load_rosters, save_roster
    from protocols.stages import Aggregate, AggregationProtocol, ClientInput, StageSpec, VectorSpec
    from protocols.transcript import (
        TranscriptProblem,
        TranscriptReport,
        TranscriptWriter,
        verify_transcript,
    )

__all__ = [
    "FORMAT_VERSION",
    "MAX_MESSAGE_BYTES",
    "Aggregate",
    "AggregationProtocol",
    "ClientInput",
    "Identities",
    "Message",
    "MessageDecodeError",
    "ProtocolAbort",
    "ProtocolError",
    "ProtocolInputError",
    "Roster",
    "RosterError",
    "RoundResult",
    "StageSpec",
    "TranscriptError",
    "TranscriptProblem",
    "TranscriptReport",
    "TranscriptWriter",
    "VectorSpec",
    "decode",
    "encode",
    "load_rosters",
    "make_protocol",
    "protocol_names",
    "check_against_plain",
    "run_round",
    "save_roster",
    "verify_transcript",
]
