"""Which round indices a client has already answered an unmasking request for.

A client that answers two unmasking requests for one round index (a round left
open and redone by a resumed session, say) could hand the aggregator two sums of
the same inputs over different lists, and so their difference. Each client
therefore claims the round index before it reveals anything; a second claim is
refused. `FileAnswerLog` makes the claim durable (appended and fsynced) so that
it holds across sessions; `MemoryAnswerLog` holds for one process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from protocols.errors import ProtocolAbort, TranscriptError


class AnswerLog(Protocol):
    def claim(self, party: str, round_index: int | str) -> None:
        """Record that `party` answers round `round_index` (an index, or a label that
        also names the run); raise `ProtocolAbort` if it did before."""


class MemoryAnswerLog:
    def __init__(self) -> None:
        self._claimed: set[tuple[str, int | str]] = set()

    def claim(self, party: str, round_index: int | str) -> None:
        key = (party, round_index)
        if key in self._claimed:
            raise ProtocolAbort(f"{party} refuses: it already answered an unmasking request "
                                f"for round {round_index}")
        self._claimed.add(key)


class FileAnswerLog:
    """One JSON line per claim, {"party", "round"}; read once, then appended."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._claimed: set[tuple[str, int | str]] = set()
        if self.path.exists():
            for lineno, raw in enumerate(self.path.read_bytes().splitlines(), 1):
                try:
                    rec = json.loads(raw)
                    index = rec["round"]
                    if not isinstance(index, int | str):
                        raise TypeError(index)
                    self._claimed.add((str(rec["party"]), index))
                except (ValueError, KeyError, TypeError):
                    raise TranscriptError(
                        f"{self.path}:{lineno}: not an answer-log record") from None

    def claim(self, party: str, round_index: int | str) -> None:
        key = (party, round_index)
        if key in self._claimed:
            raise ProtocolAbort(f"{party} refuses: it already answered an unmasking request "
                                f"for round {round_index} (recorded in {self.path.name})")
        line = json.dumps({"party": party, "round": round_index}, sort_keys=True) + "\n"
        with open(self.path, "a", encoding="ascii") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._claimed.add(key)

