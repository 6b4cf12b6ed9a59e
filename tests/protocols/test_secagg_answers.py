"""A client answers one unmasking request per round index, across sessions: the
claim is written to disk before any share leaves, and a redone round is refused."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.driver import run_round
from protocols.errors import ProtocolAbort, TranscriptError
from protocols.roster import Identities
from protocols.secagg import SecAggProtocol
from protocols.secagg.answers import FileAnswerLog, MemoryAnswerLog
from protocols.stages import ClientInput

IDS = Identities.generate([f"a{i}" for i in range(5)])


def _inputs():
    return {c: ClientInput(vector=np.ones(3), weight=1.0) for c in IDS.client_ids}


def test_a_claim_outlives_the_process_that_made_it(tmp_path):
    path = tmp_path / "answers.jsonl"
    FileAnswerLog(path).claim("a0", 3)
    again = FileAnswerLog(path)  # a resumed session reads what the last one claimed
    with pytest.raises(ProtocolAbort, match="already answered"):
        again.claim("a0", 3)
    again.claim("a0", 4)
    again.claim("a1", 3)
    again.claim("a1", "run r1, round 3")
    with pytest.raises(ProtocolAbort):
        FileAnswerLog(path).claim("a1", "run r1, round 3")


def test_a_corrupt_log_is_a_named_error(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_bytes(b"\x00not json\n")
    with pytest.raises(TranscriptError, match="not an answer-log record"):
        FileAnswerLog(path)


@pytest.mark.parametrize("durable", [True, False])
def test_a_round_index_redone_with_the_same_clients_is_refused_before_any_reveal(tmp_path,
                                                                                 durable):
    log = FileAnswerLog(tmp_path / "answers.jsonl") if durable else MemoryAnswerLog()
    protocol = SecAggProtocol().bind(IDS).with_answers(log)
    run_round(protocol, round_index=7, inputs=_inputs(), identities=IDS, transcript=None)
    # Another session (a new protocol object, the same log) redoes round 7.
    redo = SecAggProtocol().bind(IDS).with_answers(
        FileAnswerLog(tmp_path / "answers.jsonl") if durable else log)
    with pytest.raises(ProtocolAbort, match="already answered an unmasking request for round 7"):
        run_round(redo, round_index=7, inputs=_inputs(), identities=IDS, transcript=None)
    run_round(redo, round_index=8, inputs=_inputs(), identities=IDS, transcript=None)
