"""Release evidence: every round whose messages let the aggregator compute a sum
(`protocol.evidence_stages`) is audited, closed or left open, and no round index
is released twice. An aggregator that leaves an attacked round open, or runs a
round again after a resume, does not get a verified transcript."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import protocols.transcript.verify as verify_module
from protocols.driver import run_round
from protocols.messages import canonical_json
from protocols.plain import PlainProtocol
from protocols.registry import make_protocol
from protocols.roster import Identities
from protocols.stages import ClientInput
from protocols.transcript import RECORD_DOMAIN, RoundView, TranscriptWriter, verify_transcript

AUDITED: list[RoundView] = []


class AuditedPlain(PlainProtocol):
    """Plain with an audit: one rule (no update from `forbid`) that needs no close,
    and a record of every view it was handed."""

    name = "audited-plain"

    def __init__(self, *, min_survivors: int = 1, forbid: str = "") -> None:
        super().__init__(min_survivors=min_survivors)
        self.forbid = forbid

    @property
    def params(self) -> dict:
        return {"min_survivors": self.min_survivors, "forbid": self.forbid}

    def audit_round(self, view: RoundView) -> list[tuple[int, str]]:
        AUDITED.append(view)
        return [(r.line, f"{r.sender} may not submit") for r in view.records
                if r.stage == "SubmitUpdate" and r.sender == self.forbid]


@pytest.fixture(autouse=True)
def audited_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    def make(name: str, **params):
        return AuditedPlain(**params) if name == AuditedPlain.name else make_protocol(
            name, **params)

    monkeypatch.setattr(verify_module, "make_protocol", make)
    AUDITED.clear()


class _Crash(Exception):
    pass


def _crash_at(stage: str):
    """A tap that kills the run right after the first message of `stage` is recorded."""

    def tap(at: str, data: bytes) -> bytes:
        if at == stage:
            raise _Crash(stage)
        return data

    return tap


def _inputs(ids: Identities, seed: int) -> dict[str, ClientInput]:
    gen = np.random.default_rng(seed)
    return {c: ClientInput(vector=gen.normal(size=6), weight=1.0) for c in ids.client_ids}


def _session(path: Path, ids: Identities, protocol, rounds: list[int], *, plan: tuple[int, int],
             crash: str | None = None, dropouts=None) -> None:
    """One session closing `rounds`; with `crash`, the last of them dies at that stage."""
    with TranscriptWriter.open(path, identities=ids, protocol=protocol,
                               planned_rounds=plan) as tw:
        for r in rounds:
            last = r == rounds[-1]
            tap = _crash_at(crash) if crash is not None and last else None
            try:
                run_round(protocol, round_index=r, inputs=_inputs(ids, r), identities=ids,
                          transcript=tw, tap=tap, dropouts=dropouts if last else None)
            except _Crash:
                return


def _lines(path: Path) -> list[dict]:
    return [json.loads(raw) for raw in path.read_bytes().splitlines()]


def _line_of(path: Path, **want) -> int:
    return next(i for i, rec in enumerate(_lines(path), 1)
                if all(rec.get(k) == v for k, v in want.items()))


# -- the mechanism, on a small audited protocol ------------------------------------------


def test_a_round_left_open_after_release_is_audited_without_a_statement(
    tmp_path: Path, identities: Identities
) -> None:
    path = tmp_path / "t.jsonl"
    protocol = AuditedPlain()
    _session(path, identities, protocol, [0, 1], plan=(0, 2), crash="BroadcastAggregate")
    _session(path, identities, protocol, [2], plan=(2, 3))  # moves on to a fresh index
    report = verify_transcript(path, identities.roster())
    assert report.ok, report.problems
    assert (report.rounds, report.interrupted_rounds, report.interrupted_after_release) == (
        2, 0, 1)
    assert report.to_dict()["interrupted_after_release"] == 1
    (open_view,) = [v for v in AUDITED if v.statement is None]
    assert open_view.round_index == 1
    last_of_round_1 = max(i for i, rec in enumerate(_lines(path), 1) if rec.get("round") == 1)
    assert open_view.close_line == last_of_round_1
    assert {r.stage for r in open_view.records} == {"SubmitUpdate", "BroadcastAggregate"}
    assert sorted(v.round_index for v in AUDITED if v.statement is not None) == [0, 2]


def test_an_attack_in_a_round_left_open_fails_at_its_line(
    tmp_path: Path, identities: Identities
) -> None:
    path = tmp_path / "t.jsonl"
    protocol = AuditedPlain(forbid="c3")
    with TranscriptWriter.open(path, identities=identities, protocol=protocol,
                               planned_rounds=(0, 2)) as tw:
        run_round(protocol, round_index=0, inputs=_inputs(identities, 0), identities=identities,
                  transcript=tw, dropouts={"c3": "SubmitUpdate"})
        with pytest.raises(_Crash):
            run_round(protocol, round_index=1, inputs=_inputs(identities, 1),
                      identities=identities, transcript=tw, tap=_crash_at("BroadcastAggregate"))
    _session(path, identities, protocol, [2], plan=(2, 3), dropouts={"c3": "SubmitUpdate"})
    report = verify_transcript(path, identities.roster())
    attack = _line_of(path, round=1, sender="c3", stage="SubmitUpdate")
    assert [(p.line, p.message) for p in report.problems] == [(attack, "c3 may not submit")]


def test_a_round_left_open_at_the_end_is_audited_too(tmp_path: Path,
                                                      identities: Identities) -> None:
    path = tmp_path / "t.jsonl"
    _session(path, identities, AuditedPlain(forbid="c1"), [0], plan=(0, 1),
             crash="BroadcastAggregate")
    report = verify_transcript(path, identities.roster())
    messages = [p.message for p in report.problems]
    assert "c1 may not submit" in messages
    assert any("ends inside round 0" in m for m in messages)


def test_a_round_left_open_within_a_session_is_audited_too(tmp_path: Path,
                                                            identities: Identities) -> None:
    """The aggregator skips round 0's close and goes on with round 1."""
    path = tmp_path / "t.jsonl"
    protocol = AuditedPlain(forbid="c2")
    with TranscriptWriter.open(path, identities=identities, protocol=protocol) as tw:
        with pytest.raises(_Crash):
            run_round(protocol, round_index=0, inputs=_inputs(identities, 0),
                      identities=identities, transcript=tw, tap=_crash_at("BroadcastAggregate"))
        tw._round = None  # the writer would refuse; the aggregator writes what it likes
        run_round(protocol, round_index=1, inputs=_inputs(identities, 1), identities=identities,
                  transcript=tw, dropouts={"c2": "SubmitUpdate"})
    report = verify_transcript(path, identities.roster())
    attack = _line_of(path, round=0, sender="c2", stage="SubmitUpdate")
    assert (attack, "c2 may not submit") in [(p.line, p.message) for p in report.problems]
    assert any("while round 0 is open" in p.message for p in report.problems)


def test_a_round_released_open_then_run_again_fails(tmp_path: Path,
                                                    identities: Identities) -> None:
    path = tmp_path / "t.jsonl"
    protocol = AuditedPlain()
    _session(path, identities, protocol, [0], plan=(0, 1), crash="BroadcastAggregate")
    _session(path, identities, protocol, [0], plan=(0, 1))  # redoes the released index
    first = _line_of(path, round=0, stage="SubmitUpdate")
    again = _line_of(path, round=0, stage="SubmitUpdate", session=1)
    report = verify_transcript(path, identities.roster())
    assert [(p.line, p.message) for p in report.problems] == [
        (again, f"round 0 released twice: it already holds release evidence at line {first}")
    ]


def test_a_closed_round_aggregated_again_after_a_resume_fails(tmp_path: Path,
                                                              identities: Identities) -> None:
    """A crash after the close but before the checkpoint: a resumed session that
    aggregates the same index again could let the two sums be differenced."""
    path = tmp_path / "t.jsonl"
    protocol = make_protocol("plain")
    _session(path, identities, protocol, [0, 1], plan=(0, 2))
    _session(path, identities, protocol, [1], plan=(1, 2))
    report = verify_transcript(path, identities.roster())
    first = _line_of(path, round=1, stage="SubmitUpdate")
    again = _line_of(path, round=1, stage="SubmitUpdate", session=1)
    assert [(p.line, p.message) for p in report.problems] == [
        (again, f"round 1 released twice: it already holds release evidence at line {first}")
    ]


# -- secagg: what an active aggregator tries ------------------------------------------------


def _rechain(records: list[dict], party: str, key) -> list[bytes]:
    """`party` re-signs its whole chain after an edit (it holds its own key)."""
    head, out = None, []
    for rec in records:
        if rec["sender"] == party:
            rec = {k: v for k, v in rec.items() if k != "sig"}
            rec["seq"], rec["prev"] = (0, None) if head is None else (head[0] + 1, head[1])
            rec["sig"] = key.sign(RECORD_DOMAIN + canonical_json(rec)).hex()
            head = (rec["seq"], hashlib.sha256(canonical_json(rec)).hexdigest())
        out.append(canonical_json(rec) + b"\n")
    return out


@pytest.mark.parametrize("name", ["plain", "secagg", "ckks", "tee"])
def test_an_honest_round_interrupted_after_release_verifies(
    tmp_path: Path, identities: Identities, name: str
) -> None:
    """A crash right after the first evidence message (secagg: an Unmask); the
    resumed session moves on to a fresh round index. The open round passes its
    protocol's audit without a statement."""
    path = tmp_path / "t.jsonl"
    protocol = make_protocol(name).bind(identities)
    (evidence,) = protocol.evidence_stages
    _session(path, identities, protocol, [0, 1], plan=(0, 2), crash=evidence)
    _session(path, identities, protocol, [2], plan=(2, 3))
    report = verify_transcript(path, identities.roster())
    assert report.ok, report.problems
    assert (report.rounds, report.interrupted_after_release) == (2, 1)


def test_secagg_equivocation_in_a_round_left_open_fails(tmp_path: Path,
                                                        identities: Identities) -> None:
    """Nothing co-signs an open round's records, so the aggregator may rewrite its own
    unmasking request there (re-signing its chain): a survivor list that differs
    between clients. The audit of the open round still names it."""
    path = tmp_path / "t.jsonl"
    protocol = make_protocol("secagg")
    _session(path, identities, protocol, [0], plan=(0, 2), crash="Unmask")
    _session(path, identities, protocol, [1], plan=(1, 2))
    records = _lines(path)
    edited = [i for i, rec in enumerate(records) if rec.get("stage") == "UnmaskRequest"][-1]
    meta = records[edited]["meta"]
    victim = next(c for c in meta["included"] if c != records[edited]["receiver"])
    meta["included"] = [c for c in meta["included"] if c != victim]
    meta["dropped"] = sorted([*meta["dropped"], victim])
    agg = identities.aggregator_id
    path.write_bytes(b"".join(_rechain(records, agg, identities.signing_key(agg))))
    report = verify_transcript(path, identities.roster())
    assert not report.ok
    assert not any("signature" in p.message or "chain" in p.message for p in report.problems)
    named = [p for p in report.problems
             if p.line == edited + 1 and f"{victim} is listed as included to some" in p.message]
    assert named, report.problems


def test_a_secagg_round_interrupted_before_unmask_may_be_redone(
    tmp_path: Path, identities: Identities
) -> None:
    path = tmp_path / "t.jsonl"
    protocol = make_protocol("secagg")
    _session(path, identities, protocol, [0, 1], plan=(0, 2), crash="UnmaskRequest")
    crashed = path.read_bytes()
    _session(path, identities, protocol, [1], plan=(1, 2))
    report = verify_transcript(path, identities.roster())
    assert report.ok, report.problems
    assert (report.rounds, report.interrupted_rounds, report.interrupted_after_release) == (
        2, 1, 0)
    # Or it moves on to a fresh index, as the runner does: nothing of round 1 was
    # released, so it is interrupted either way.
    path.write_bytes(crashed)
    _session(path, identities, protocol, [2], plan=(2, 3))
    report = verify_transcript(path, identities.roster())
    assert report.ok, report.problems
    assert (report.interrupted_rounds, report.interrupted_after_release) == (1, 0)
    # A header that plans no rounds while one is open is refused.
    path.write_bytes(crashed)
    _session(path, identities, protocol, [], plan=None)
    report = verify_transcript(path, identities.roster())
    assert not report.ok and "still open" in report.problems[0].message


def test_a_secagg_round_interrupted_after_unmask_may_not_be_redone(
    tmp_path: Path, identities: Identities
) -> None:
    path = tmp_path / "t.jsonl"
    protocol = make_protocol("secagg")
    _session(path, identities, protocol, [0], plan=(0, 1), crash="Unmask")
    _session(path, identities, protocol, [0], plan=(0, 1))
    report = verify_transcript(path, identities.roster())
    assert any(p.message.startswith("round 0 released twice") for p in report.problems)
