"""No input makes the verifier raise: Hypothesis edits one entry or field of small
real transcripts (plain, secagg, ckks, tee; two sessions) with odd JSON values
(duplicated ids, wrong types, huge integers, nested junk, edited header
parameters such as threshold and degree), re-signed by the aggregator or not.
Every mutant fails with named problems; only a file whose first line is no
header any more may raise TranscriptError (not a transcript at all). The
summary behind `transcript show` reads every mutant without raising.

The suite runs a small sample; a long run:

    SECUREDIFF_TRANSCRIPT_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest \
        tests/protocols/test_transcript_fuzz.py
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import protocols.transcript.verify as verify_module
from protocols.driver import run_round
from protocols.errors import TranscriptError
from protocols.messages import canonical_json
from protocols.registry import make_protocol
from protocols.roster import Identities
from protocols.stages import ClientInput
from protocols.transcript import (
    RECORD_DOMAIN,
    UNCHECKABLE,
    TranscriptReport,
    TranscriptWriter,
    summarize_transcript,
    verify_transcript,
)

EXAMPLES = int(os.environ.get("SECUREDIFF_TRANSCRIPT_FUZZ_EXAMPLES", "100"))
IDS = Identities.generate(["c0", "c1", "c2", "c3"])
PROTOCOLS = ("plain", "secagg", "ckks", "tee")


def _session(path: Path, name: str, rounds: range) -> None:
    protocol = make_protocol(name).bind(IDS)
    last_client_stage = [s.name for s in protocol.stages if s.sender == "client"][-1]
    with TranscriptWriter.open(path, identities=IDS, protocol=protocol,
                               planned_rounds=(rounds.start, rounds.stop)) as tw:
        for r in rounds:
            gen = np.random.default_rng(r)
            inputs = {c: ClientInput(vector=gen.normal(size=3), weight=float(i + 1))
                      for i, c in enumerate(IDS.client_ids)}
            run_round(protocol, round_index=r, inputs=inputs, identities=IDS, transcript=tw,
                      dropouts={"c1": last_client_stage} if r == 0 else None)


def _build(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Per protocol: two sessions (rounds 0-1, then round 2), the last round aggregated."""
    out = {}
    for name in PROTOCOLS:
        path = root / f"{name}.jsonl"
        _session(path, name, range(0, 2))
        _session(path, name, range(2, 3))
        report = verify_transcript(path, IDS.roster())
        if not report.ok:
            raise RuntimeError(f"the clean {name} transcript does not verify: {report.problems}")
        out[name] = [json.loads(raw) for raw in path.read_bytes().splitlines()]
    return out


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    return _build(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mutants")


@pytest.fixture(scope="module", autouse=True)
def cached_signature_checks():
    """Mutants share every record but one: remember the Ed25519 checks (pure calls)."""
    original = verify_module.verify_signature

    @functools.cache
    def check(public_key: bytes, message: bytes, signature: bytes) -> bool:
        return original(public_key=public_key, message=message, signature=signature)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(verify_module, "verify_signature",
                   lambda **kw: check(kw["public_key"], kw["message"], kw["signature"]))
        yield


# -- odd values ------------------------------------------------------------------------------
HUGE = st.sampled_from([2**63, -(2**63) - 1, 2**64, 2**200, 10**300, -(10**300)])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(), HUGE,
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from(["c0", "c1", "aggregator", "", "0" * 64, "RoundClose", "header"]),
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8,
)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a record: the record itself, and each key or index below it."""
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out += _paths(value, (*prefix, index))
    return out


def _at(obj: Any, path: tuple) -> Any:
    for step in path:
        obj = obj[step]
    return obj


def _mutate(rec: dict[str, Any], path: tuple, how: str, value: Any) -> Any:
    """One edit at `path`: set it, delete it, add a key beside it, or duplicate it
    inside its list (a duplicated id)."""
    rec = copy.deepcopy(rec)
    if not path:
        return value if how == "set" else rec
    parent, last = _at(rec, path[:-1]), path[-1]
    if how == "set":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    elif how == "duplicate" and isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    elif how == "add" and isinstance(parent, dict):
        parent[f"{last}_x"] = value
    else:
        parent[last] = value
    return rec


def _resign(rec: Any) -> Any:
    """What the aggregator can do to its own records: sign the edit with its key."""
    if not isinstance(rec, dict) or rec.get("sender") != IDS.aggregator_id:
        return rec
    body = {k: v for k, v in rec.items() if k != "sig"}
    try:
        signed = canonical_json(body)
    except ValueError:  # a value canonical JSON refuses (NaN): left unsigned
        return rec
    return {**body, "sig": IDS.signing_key(IDS.aggregator_id).sign(RECORD_DOMAIN + signed).hex()}


def _encode(rec: Any) -> bytes:
    try:
        return canonical_json(rec)
    except ValueError:  # NaN and friends: written anyway, as a careless writer would
        return json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()


def _verify_mutant(workdir: Path, records: list[dict], line: int, mutant: Any) -> None:
    lines = [canonical_json(r) for r in records]
    edited = _encode(mutant)
    assume(edited != lines[line])
    lines[line] = edited
    path = workdir / "t.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    try:
        report = verify_transcript(path, IDS.roster())
    except TranscriptError:
        assert line == 0, "only a first line that is no header may make it not a transcript"
        return
    _assert_named_failure(report)
    summarize_transcript(path)  # `transcript show` reads anything as written, too


def _assert_named_failure(report: TranscriptReport) -> None:
    assert report.problems, "a mutant verified"
    last_resort = [p for p in report.problems if p.message.startswith(UNCHECKABLE)]
    assert not last_resort, f"a check raised instead of naming the problem: {last_resort}"


FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(data=st.data())
def test_any_single_field_edit_fails_by_name_and_never_raises(clean, workdir, data) -> None:
    records = clean[data.draw(st.sampled_from(PROTOCOLS), label="protocol")]
    line = data.draw(st.integers(0, len(records) - 1), label="line")
    path = data.draw(st.sampled_from(_paths(records[line])), label="path")
    how = data.draw(st.sampled_from(["set", "set", "delete", "add", "duplicate"]), label="how")
    mutant = _mutate(records[line], path, how, data.draw(JUNK, label="value"))
    if data.draw(st.booleans(), label="re-signed by the aggregator"):
        mutant = _resign(mutant)
    _verify_mutant(workdir, records, line, mutant)


@FUZZ
@given(data=st.data())
def test_edited_header_parameters_fail_by_name(clean, workdir, data) -> None:
    """The aggregator rewrites a parameter in a session header and re-signs it."""
    name = data.draw(st.sampled_from(PROTOCOLS), label="protocol")
    records = clean[name]
    line = data.draw(st.sampled_from([i for i, r in enumerate(records) if r["kind"] == "header"]))
    params = records[line]["params"]
    key = data.draw(st.sampled_from(sorted(params)), label="parameter")
    value = data.draw(st.one_of(st.integers(-2, 8), HUGE, SCALARS, JUNK), label="value")
    mutant = _resign(_mutate(records[line], ("params", key), "set", value))
    _verify_mutant(workdir, records, line, mutant)


# -- mutations a review found the verifier let through, pinned -------------------------------
def _close_line(records: list[dict]) -> int:
    return max(i for i, r in enumerate(records) if r["kind"] == "round_close")


@pytest.mark.parametrize("name", PROTOCOLS)
@pytest.mark.parametrize("resign", [False, True])
def test_a_duplicated_survivor_id_is_a_named_problem(clean, workdir, name, resign) -> None:
    records = clean[name]
    line = _close_line(records)
    survivors = records[line]["statement"]["survivors"]
    mutant = _mutate(records[line], ("statement", "survivors", 0), "duplicate", None)
    assert mutant["statement"]["survivors"] == [survivors[0], *survivors]
    _verify_mutant(workdir, records, line, _resign(mutant) if resign else mutant)


@pytest.mark.parametrize("value", [1, 2, 3, 99, -1, 2**70, 1.5, "3", None, [3]])  # 0 is the default
@pytest.mark.parametrize("key", ["threshold", "degree"])
def test_an_edited_secagg_threshold_or_degree_is_a_named_problem(clean, workdir, key,
                                                                 value) -> None:
    records = clean["secagg"]
    mutant = _resign(_mutate(records[0], ("params", key), "set", value))
    _verify_mutant(workdir, records, 0, mutant)
