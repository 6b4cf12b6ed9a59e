"""Blind aggregation protocols over flat numeric vectors, and their transcripts.

The federation loop calls `run_round(make_protocol(name, **params), ...)` and
divides the weighted sum by the total weight itself. Nothing here knows about
torch or models.
"""

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
