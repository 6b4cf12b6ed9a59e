"""Every single-entry mutation of a valid secagg, ckks or tee transcript is caught,
and none makes the verifier raise: a bit flip, a dropped, reordered or duplicated
line, a changed sender, an edited meta; so are tampered payloads and an
aggregator that releases something other than the unmasked sum. Field-level
edits of any record, re-signed by the aggregator or not, are searched in
test_transcript_fuzz.py."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

import protocols.transcript.verify as verify_module
from protocols.driver import run_round
from protocols.errors import TranscriptError
from protocols.hazmat.quantize import decode
from protocols.messages import canonical_json
from protocols.registry import make_protocol
from protocols.roster import Identities
from protocols.secagg import SecAggProtocol
from protocols.secagg.unmask import to_wire
from protocols.stages import ClientInput
from protocols.transcript import (
    RECORD_DOMAIN,
    UNCHECKABLE,
    TranscriptWriter,
    payload_dir,
    verify_transcript,
)

MUTATED = ("secagg", "ckks", "tee")


def _dropouts(protocol) -> list[dict[str, str]]:
    """Round 0: c1 leaves mid-round (secagg: before MaskedInput); round 1: c3 leaves
    before the last client stage (secagg: Unmask)."""
    stages = [s.name for s in protocol.stages if s.sender == "client"]
    return [{"c1": stages[min(2, len(stages) - 1)]}, {"c3": stages[-1]}]


def _inputs(seed: int) -> dict[str, ClientInput]:
    gen = np.random.default_rng(seed)
    return {c: ClientInput(vector=gen.normal(size=16), weight=float(i + 1))
            for i, c in enumerate(["c0", "c1", "c2", "c3"])}


def _write(path: Path, ids: Identities, protocol, *, payloads: bool = False) -> None:
    with TranscriptWriter.open(path, identities=ids, protocol=protocol,
                               store_payloads=payloads) as tw:
        for r, dropouts in enumerate(_dropouts(protocol)):
            run_round(protocol, round_index=r, inputs=_inputs(r), identities=ids, transcript=tw,
                      dropouts=dropouts)


@pytest.fixture(autouse=True)
def cached_signature_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each mutant differs from the clean transcript in one place: the Ed25519 checks
    of every other record are the same pure calls again, so remember them (the
    suite runs thousands of verifications)."""
    original = verify_module.verify_signature

    @functools.cache
    def check(public_key: bytes, message: bytes, signature: bytes) -> bool:
        return original(public_key=public_key, message=message, signature=signature)

    monkeypatch.setattr(verify_module, "verify_signature",
                        lambda **kw: check(kw["public_key"], kw["message"], kw["signature"]))


@pytest.fixture(scope="module", params=MUTATED)
def clean(request, tmp_path_factory, identities: Identities) -> bytes:
    path = tmp_path_factory.mktemp("clean") / "t.jsonl"
    _write(path, identities, make_protocol(request.param).bind(identities))
    assert verify_transcript(path, identities.roster()).ok
    return path.read_bytes()


def _detected(path: Path, ids: Identities, data: bytes) -> list:
    path.write_bytes(data)
    try:
        report = verify_transcript(path, ids.roster())
    except TranscriptError:  # e.g. the header itself is gone: not a transcript at all
        return [None]
    # Caught by a named check, not by the verifier's last resort.
    assert not [p for p in report.problems if p.message.startswith(UNCHECKABLE)], report.problems
    return list(report.problems)


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def test_every_bit_flip_is_caught_at_its_line(tmp_path, identities, clean) -> None:
    lines = _lines(clean)
    rng = random.Random(0)
    for i, line in enumerate(lines):
        for pos in rng.sample(range(len(line) - 1), 2):  # not the newline
            mutated = bytearray(line)
            mutated[pos] ^= 1 << rng.randrange(7)
            problems = _detected(tmp_path / "t.jsonl", identities,
                                 b"".join([*lines[:i], bytes(mutated), *lines[i + 1:]]))
            assert problems, f"flip at line {i + 1}, byte {pos} went unnoticed"
            assert problems[0] is None or problems[0].line == i + 1


@pytest.mark.parametrize("mutation", ["drop", "swap", "duplicate", "sender"])
def test_every_line_mutation_is_caught(tmp_path, identities, clean, mutation) -> None:
    lines = _lines(clean)
    parties = ["aggregator", "c0", "c1", "c2", "c3"]
    for i in range(len(lines)):
        if mutation == "drop":
            out = lines[:i] + lines[i + 1:]
        elif mutation == "swap":
            if i + 1 == len(lines):
                continue
            out = [*lines[:i], lines[i + 1], lines[i], *lines[i + 2:]]
        elif mutation == "duplicate":
            out = [*lines[: i + 1], lines[i], *lines[i + 1:]]
        else:
            rec = json.loads(lines[i])
            rec["sender"] = next(p for p in parties if p != rec["sender"])
            out = [*lines[:i], canonical_json(rec) + b"\n", *lines[i + 1:]]
        assert _detected(tmp_path / "t.jsonl", identities, b"".join(out)), (mutation, i + 1)


def test_a_cut_between_rounds_needs_the_expected_round_count(tmp_path, identities,
                                                             clean) -> None:
    lines = _lines(clean)
    last_close = max(i for i, raw in enumerate(lines[:-1])
                     if json.loads(raw)["kind"] == "round_close")
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"".join(lines[: last_close + 1]))
    assert verify_transcript(path, identities.roster()).ok
    report = verify_transcript(path, identities.roster(), expected_rounds=2)
    assert "1 aggregated round(s), 2 expected" in report.problems[0].message


class LyingAggregator(SecAggProtocol):
    """Releases the unmasked sum plus one in the first coordinate (and the clients,
    who see only what they are sent, co-sign it)."""

    def server_send(self, stage, state):
        state, out = super().server_send(stage, state)
        if stage != "Release":
            return state, out
        data = state.data
        total = np.array(data.total)
        total[0] += 1
        lie = decode(total, fixed=data.ctx.fixed, ring=data.ctx.ring, integer=False,
                     n=len(data.included))
        state = dataclasses.replace(state, data=dataclasses.replace(data, total=total,
                                                                    decoded=lie))
        wire = to_wire(total, ring=data.ctx.ring)
        return state, tuple(dataclasses.replace(m, total=wire) for m in out)


def test_payload_replay_catches_a_released_sum_that_is_not_the_unmasked_one(
    tmp_path, identities
) -> None:
    path = tmp_path / "t.jsonl"
    _write(path, identities, LyingAggregator(), payloads=True)
    (tmp_path / "elsewhere").mkdir()
    blind = verify_transcript(path, identities.roster(), payloads=tmp_path / "elsewhere")
    assert blind.ok  # signatures and metas alone cannot see it
    report = verify_transcript(path, identities.roster())
    assert not report.ok
    assert "the released aggregate is not the unmasked sum" in report.problems[0].message


def test_stored_payloads_are_checked_and_replayed(tmp_path, identities) -> None:
    path = tmp_path / "t.jsonl"
    _write(path, identities, make_protocol("secagg").bind(identities), payloads=True)
    report = verify_transcript(path, identities.roster())
    assert report.ok and report.replayed_rounds == 2
    stored = sorted(payload_dir(path).iterdir())
    victim = stored[len(stored) // 2]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    report = verify_transcript(path, identities.roster())
    assert not report.ok
    assert "stored payload does not match" in report.problems[0].message


def test_a_cut_after_a_whole_round_is_caught_when_the_header_plans_the_rounds(
    tmp_path, identities
) -> None:
    path = tmp_path / "t.jsonl"
    protocol = make_protocol("secagg")
    with TranscriptWriter.open(path, identities=identities, protocol=protocol,
                               planned_rounds=(0, 2)) as tw:
        for r, dropouts in enumerate(_dropouts(protocol)):
            run_round(protocol, round_index=r, inputs=_inputs(r), identities=identities,
                      transcript=tw, dropouts=dropouts)
    assert verify_transcript(path, identities.roster()).ok
    lines = _lines(path.read_bytes())
    first_close = min(i for i, raw in enumerate(lines) if json.loads(raw)["kind"] == "round_close")
    path.write_bytes(b"".join(lines[: first_close + 1]))
    report = verify_transcript(path, identities.roster())
    assert not report.ok
    assert report.problems[0].line == first_close + 1
    assert "planned rounds 0..1" in report.problems[0].message
    # The aggregator cannot rewrite the plan: its chain, which the survivors
    # co-signed, runs through the header.
    header = json.loads(lines[0])
    header["rounds"] = [0, 1]
    del header["sig"]
    key = identities.signing_key(identities.aggregator_id)
    header["sig"] = key.sign(RECORD_DOMAIN + canonical_json(header)).hex()
    path.write_bytes(canonical_json(header) + b"\n" + b"".join(lines[1: first_close + 1]))
    report = verify_transcript(path, identities.roster())
    assert not report.ok and report.problems[0].line > 1  # the header itself verifies


def test_deleting_an_aggregator_record_and_re_chaining_its_own_chain_is_caught(
    tmp_path, identities, clean
) -> None:
    """The aggregator holds its own key, so it can drop one of its messages and
    re-sign every later record of its chain (seq and prev fixed up). What it
    cannot redo are the survivors' co-signatures over the round's record list."""
    lines = _lines(clean)
    agg = identities.aggregator_id
    key = identities.signing_key(agg)
    records = [json.loads(raw) for raw in lines]
    victim = next(i for i, r in enumerate(records)
                  if r["kind"] == "message" and r["sender"] == agg and i > 3)
    kept = records[:victim] + records[victim + 1:]
    head: tuple[int, str] | None = None
    out = []
    for rec in kept:
        if rec["sender"] == agg:
            rec = {k: v for k, v in rec.items() if k != "sig"}
            rec["seq"], rec["prev"] = (0, None) if head is None else (head[0] + 1, head[1])
            rec["sig"] = key.sign(RECORD_DOMAIN + canonical_json(rec)).hex()
        line = canonical_json(rec)
        if rec["sender"] == agg:
            head = (rec["seq"], hashlib.sha256(line).hexdigest())
        out.append(line + b"\n")
    problems = _detected(tmp_path / "t.jsonl", identities, b"".join(out))
    assert problems and problems[0] is not None
    # Named at or after the gap, never before it.
    assert problems[0].line >= victim + 1, problems
    assert any("close lists" in p.message for p in problems), problems


def test_edited_metas_never_crash_the_verifier(tmp_path, identities, clean) -> None:
    """Metas rewritten into other shapes (as a flipped byte in a name can do) give
    problems, never an exception out of the protocol's audit."""
    lines = _lines(clean)
    edits = [lambda m: {}, lambda m: {k: None for k in m}, lambda m: {k: [] for k in m},
             lambda m: {**{k: ["zz"] for k in m}}]
    for i, raw in enumerate(lines):
        rec = json.loads(raw)
        if rec["kind"] != "message" or not isinstance(rec["meta"], dict):
            continue
        for edit in edits:
            if edit(rec["meta"]) == rec["meta"]:
                continue  # e.g. an empty list made empty: not a mutation
            rec2 = {**rec, "meta": edit(rec["meta"])}
            out = [*lines[:i], canonical_json(rec2) + b"\n", *lines[i + 1:]]
            assert _detected(tmp_path / "t.jsonl", identities, b"".join(out))
