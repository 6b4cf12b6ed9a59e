"""Errors of the protocol layer. `ProtocolAbort` is the one error for anything a
peer did wrong or a round that cannot complete (too few survivors)."""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error the protocols package raises on purpose."""


class ProtocolAbort(ProtocolError, RuntimeError):
    """The round cannot complete: a peer misbehaved or too few clients survived."""


class MessageDecodeError(ProtocolError, ValueError):
    """Bytes that are not a well-formed message of the expected version and type."""


class TranscriptError(ProtocolError, ValueError):
    """A transcript that is malformed, truncated, or fails verification."""


class ProtocolInputError(ProtocolError, ValueError):
    """A value handed to the protocol layer is invalid: an input vector or weight,
    a message field, an unknown protocol, stage or party."""


class RosterError(ProtocolError, ValueError):
    """A roster that is malformed, unreadable, or does not pin the party asked for."""
