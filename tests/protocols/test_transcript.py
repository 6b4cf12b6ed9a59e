"""Transcripts: a real multi-round run verifies, and each kind of tampering is
caught at the line where it happened."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from protocols.driver import run_round
from protocols.errors import ProtocolAbort, TranscriptError
from protocols.hazmat.signing import SigningKey
from protocols.messages import canonical_json
from protocols.plain import PlainProtocol
from protocols.roster import Identities
from protocols.transcript import RECORD_DOMAIN, TranscriptWriter, verify_transcript

DROPOUTS = [None, {"c3": "SubmitUpdate"}, {"c2": "BroadcastAggregate"}]


def _run(path: Path, ids: Identities, make_inputs, *, first_round: int = 0) -> None:
    protocol = PlainProtocol()
    with TranscriptWriter.open(path, identities=ids, protocol=protocol) as tw:
        for offset, dropouts in enumerate(DROPOUTS):
            run_round(
                protocol,
                round_index=first_round + offset,
                inputs=make_inputs(seed=offset),
                identities=ids,
                transcript=tw,
                dropouts=dropouts,
            )


@pytest.fixture
def run(tmp_path: Path, identities: Identities, make_inputs) -> Path:
    path = tmp_path / "transcript.jsonl"
    _run(path, identities, make_inputs)
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _find(lines: list[bytes], **want: object) -> int:
    """1-based number of the first line whose record has all the `want` fields."""
    for number, raw in enumerate(lines, 1):
        rec = json.loads(raw)
        if all(rec.get(k) == v for k, v in want.items()):
            return number
    raise LookupError(want)


def _replace(path: Path, number: int, rec: dict) -> None:
    lines = _lines(path)
    lines[number - 1] = canonical_json(rec) + b"\n"
    path.write_bytes(b"".join(lines))


def _resign(rec: dict, key: SigningKey) -> dict:
    body = {k: v for k, v in rec.items() if k != "sig"}
    return {**body, "sig": key.sign(RECORD_DOMAIN + canonical_json(body)).hex()}


def _first(path: Path, ids: Identities):
    report = verify_transcript(path, ids.roster())
    assert not report.ok
    return report.problems[0]


def test_a_real_multi_round_transcript_verifies(run: Path, identities: Identities) -> None:
    report = verify_transcript(run, identities.roster())
    assert report.ok, report.problems
    # header + round 0: 4 up, 4 down, close + round 1: 3, 3, 1 + round 2: 4, 3, 1
    assert (report.sessions, report.rounds, report.aborted_rounds, report.records) == (1, 3, 0, 25)
    close = json.loads(_lines(run)[-1])
    assert close["statement"]["survivors"] == ["c0", "c1", "c3"]
    assert close["statement"]["dropped"] == [["c2", "unreachable before BroadcastAggregate"]]
    assert [c["signer"] for c in close["cosigs"]] == ["c0", "c1", "c3"]
    assert report.to_dict()["ok"] is True


def test_truncating_the_last_record_is_caught(run: Path, identities: Identities) -> None:
    run.write_bytes(b"".join(_lines(run)[:-1]))
    problem = _first(run, identities)
    assert problem.line == 24 and "ends inside round 2" in problem.message


def test_cutting_a_record_in_half_is_caught(run: Path, identities: Identities) -> None:
    run.write_bytes(run.read_bytes()[:-40])
    assert _first(run, identities).line == 25


def test_an_edited_payload_digest_is_caught(run: Path, identities: Identities) -> None:
    number = _find(_lines(run), round=1, sender="c1", kind="message")
    rec = json.loads(_lines(run)[number - 1])
    _replace(run, number, {**rec, "payload_sha256": "0" * 64})
    problem = _first(run, identities)
    assert (problem.line, problem.message) == (number, "invalid signature by c1")


def test_whitespace_edits_are_caught(run: Path, identities: Identities) -> None:
    lines = _lines(run)
    number = _find(lines, round=0, sender="c2", kind="message")
    lines[number - 1] = lines[number - 1].replace(b",", b", ", 1)
    run.write_bytes(b"".join(lines))
    problem = _first(run, identities)
    assert problem.line == number and "canonical" in problem.message


@pytest.mark.parametrize(
    "which",
    [
        {"round": 0, "sender": "c1", "kind": "message"},  # two clients' uploads
        {"round": 1, "receiver": "c1", "kind": "message"},  # two downloads of the aggregator
        {"round": 0, "receiver": "c3", "kind": "message"},  # a download and the round's close
    ],
)
def test_swapped_lines_are_caught(run: Path, identities: Identities, which: dict) -> None:
    lines = _lines(run)
    number = _find(lines, **which)
    lines[number - 1], lines[number] = lines[number], lines[number - 1]
    run.write_bytes(b"".join(lines))
    assert _first(run, identities).line == number


def test_a_record_signed_by_the_wrong_key_is_caught(run: Path, identities: Identities) -> None:
    number = _find(_lines(run), round=2, sender="c1", kind="message")
    rec = json.loads(_lines(run)[number - 1])
    _replace(run, number, _resign(rec, identities.signing_key("c2")))
    problem = _first(run, identities)
    assert (problem.line, problem.message) == (number, "invalid signature by c1")


def test_a_close_missing_a_survivors_cosignature_is_caught(
    run: Path, identities: Identities
) -> None:
    number = _find(_lines(run), round=1, kind="round_close")
    rec = json.loads(_lines(run)[number - 1])
    rec["cosigs"] = [c for c in rec["cosigs"] if c["signer"] != "c0"]
    _replace(run, number, _resign(rec, identities.signing_key("aggregator")))
    report = verify_transcript(run, identities.roster())
    at_close = [p.message for p in report.problems if p.line == number]
    assert report.problems[0].line == number
    assert at_close == ["survivor c0 did not co-sign the close of round 1"]


def test_a_rechained_deletion_is_caught(run: Path, identities: Identities) -> None:
    """The aggregator deletes its message to c1 and rewrites its own chain (it holds its
    key); the survivors' co-signed record list still pins the deleted record."""
    lines = _lines(run)
    number = _find(lines, round=0, receiver="c1", kind="message")
    del lines[number - 1]
    key, head, out = identities.signing_key("aggregator"), None, []
    for raw in lines:
        rec = json.loads(raw)
        if rec["sender"] == "aggregator":
            rec["seq"], rec["prev"] = (0, None) if head is None else (head[0] + 1, head[1])
            raw = canonical_json(_resign(rec, key)) + b"\n"
            head = (rec["seq"], hashlib.sha256(raw[:-1]).hexdigest())
        out.append(raw)
    run.write_bytes(b"".join(out))
    report = verify_transcript(run, identities.roster())
    assert report.problems[0].line == number
    assert "differs from the one round 0's close lists" in report.problems[0].message
    assert not any("signature by aggregator" in p.message for p in report.problems)


def test_sessions_after_a_resume(tmp_path: Path, identities: Identities, make_inputs) -> None:
    path = tmp_path / "transcript.jsonl"
    _run(path, identities, make_inputs)
    resumed = Identities.generate(identities.client_ids)  # a new process: new keys, new roster
    _run(path, resumed, make_inputs, first_round=3)
    lines = _lines(path)
    header = _find(lines, kind="header", session=1)
    both = [identities.roster(), resumed.roster()]

    report = verify_transcript(path, both)
    assert report.ok, report.problems
    assert (report.sessions, report.rounds) == (2, 6)
    # c0's chain runs on across the sessions: its last co-signature, then its next upload
    last_cosig = json.loads(lines[header - 2])["cosigs"][0]
    first_upload = json.loads(lines[_find(lines, round=3, sender="c0")])
    assert last_cosig["signer"] == "c0" and first_upload["seq"] == last_cosig["seq"] + 1

    only_first = verify_transcript(path, identities.roster())
    assert only_first.problems[0].line == header
    assert "not among those given" in only_first.problems[0].message

    del lines[header - 1]  # a second session without its header
    path.write_bytes(b"".join(lines))
    problem = verify_transcript(path, both).problems[0]
    assert problem.line == header and "missing session header" in problem.message


def _abort_then_retry(path: Path, identities: Identities, make_inputs, stage: str) -> None:
    """Round 0 aborts (every client silent before `stage`), then runs again at index 0."""
    with TranscriptWriter.open(path, identities=identities, protocol=PlainProtocol()) as tw:
        with pytest.raises(ProtocolAbort):
            run_round(PlainProtocol(), round_index=0, inputs=make_inputs(),
                      identities=identities, transcript=tw,
                      dropouts=dict.fromkeys(identities.client_ids, stage))
        run_round(PlainProtocol(), round_index=0, inputs=make_inputs(), identities=identities,
                  transcript=tw)


def test_a_round_aborted_before_any_release_may_be_retried(
    tmp_path: Path, identities: Identities, make_inputs
) -> None:
    path = tmp_path / "t.jsonl"
    _abort_then_retry(path, identities, make_inputs, "SubmitUpdate")
    report = verify_transcript(path, identities.roster())
    assert report.ok and (report.rounds, report.aborted_rounds) == (1, 1)
    abort = json.loads(_lines(path)[_find(_lines(path), kind="round_close") - 1])
    assert abort["statement"]["outcome"] == "aborted" and abort["cosigs"] == []


def test_a_round_aborted_after_release_evidence_may_not_be_retried(
    tmp_path: Path, identities: Identities, make_inputs
) -> None:
    """Plain's evidence is the updates themselves: once they reached the aggregator,
    a second round at the same index would release a second sum there."""
    path = tmp_path / "t.jsonl"
    _abort_then_retry(path, identities, make_inputs, "BroadcastAggregate")
    lines = _lines(path)
    first = _find(lines, kind="message", stage="SubmitUpdate")
    close = _find(lines, kind="round_close")
    again = close + 1
    report = verify_transcript(path, identities.roster())
    assert [(p.line, p.message) for p in report.problems] == [
        (again, f"round 0 released twice: it already holds release evidence at line {first}")
    ]


@pytest.mark.parametrize("content", [b"", b"hello\n", b'{"v":1,"kind":"message"}\n', None])
def test_a_file_that_is_not_a_transcript_raises(tmp_path: Path, identities, content) -> None:
    path = tmp_path / "t.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TranscriptError):
        verify_transcript(path, identities.roster())


def test_resuming_onto_a_cut_record_is_refused(run: Path, identities: Identities) -> None:
    run.write_bytes(run.read_bytes()[:-5])
    with pytest.raises(TranscriptError, match="incomplete"):
        TranscriptWriter.open(run, identities=identities, protocol=PlainProtocol())
