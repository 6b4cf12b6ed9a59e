"""`securediff transcript verify`: exit 0 verified, 1 failed, 3 unreadable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cli.transcript import transcript_app
from protocols import (
    ClientInput,
    Identities,
    TranscriptWriter,
    load_rosters,
    make_protocol,
    run_round,
    save_roster,
)
from protocols.messages import canonical_json
from protocols.tee import SIMULATED_NOTICE
from protocols.transcript import RECORD_DOMAIN

app = typer.Typer()
app.add_typer(transcript_app, name="transcript")
runner = CliRunner()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    ids = Identities.generate(["h0", "h1", "h2"])
    protocol = make_protocol("plain")
    save_roster(tmp_path / "roster.json", ids.roster())
    rng = np.random.default_rng(0)
    with TranscriptWriter.open(
        tmp_path / "transcript.jsonl", identities=ids, protocol=protocol
    ) as tw:
        for r in range(2):
            inputs = {c: ClientInput(vector=rng.normal(size=6), weight=1.0) for c in ids.client_ids}
            run_round(protocol, round_index=r, inputs=inputs, identities=ids, transcript=tw)
    return tmp_path


def _verify(*args: str):
    return runner.invoke(app, ["transcript", "verify", *args], env={"COLUMNS": "400"})


def test_a_good_run_directory_verifies(run_dir: Path) -> None:
    result = _verify(str(run_dir))
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and "2 round(s)" in result.output


def test_json_output_is_one_object(run_dir: Path) -> None:
    result = _verify(str(run_dir / "transcript.jsonl"), "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["rounds"] == 2 and report["problems"] == []


def test_a_tampered_transcript_fails_with_exit_1(run_dir: Path) -> None:
    path = run_dir / "transcript.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # drop the last round_close
    result = _verify(str(run_dir))
    assert result.exit_code == 1
    assert f"line {len(lines) - 1}:" in result.output and "verification failed" in result.output
    report = json.loads(_verify(str(run_dir), "--json").stdout)
    assert report["ok"] is False and report["problems"][0]["line"] == len(lines) - 1


def test_the_wrong_roster_fails_with_exit_1(run_dir: Path, tmp_path_factory) -> None:
    other = tmp_path_factory.mktemp("other") / "roster.json"
    save_roster(other, Identities.generate(["h0", "h1", "h2"]).roster())
    result = _verify(str(run_dir), "--roster", str(other))
    assert result.exit_code == 1 and "not among those given" in result.output


def test_unreadable_inputs_exit_3(run_dir: Path) -> None:
    assert _verify(str(run_dir / "missing.jsonl")).exit_code == 3
    (run_dir / "notes.txt").write_text("not a transcript\n")
    assert (
        _verify(str(run_dir / "notes.txt"), "--roster", str(run_dir / "roster.json")).exit_code == 3
    )
    (run_dir / "roster.json").write_text("{")
    assert _verify(str(run_dir)).exit_code == 3


# -- secagg transcripts: verified, summarised and refused when tampered ---------------------
SECAGG_IDS = Identities.generate([f"h{i}" for i in range(5)])


@pytest.fixture(scope="module")
def secagg_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("secagg")
    ids = SECAGG_IDS
    protocol = make_protocol("secagg")
    save_roster(root / "roster.json", ids.roster())
    rng = np.random.default_rng(1)
    dropouts = [{"h1": "ShareKeys"}, {"h4": "MaskedInput", "h0": "Unmask"}]
    with TranscriptWriter.open(root / "transcript.jsonl", identities=ids,
                               protocol=protocol) as tw:
        for r, drops in enumerate(dropouts):
            inputs = {c: ClientInput(vector=rng.normal(size=8), weight=2.0) for c in ids.client_ids}
            run_round(protocol, round_index=r, inputs=inputs, identities=ids, transcript=tw,
                      dropouts=drops)
    return root


@pytest.fixture
def secagg_copy(secagg_dir: Path, tmp_path: Path) -> Path:
    for name in ("roster.json", "transcript.jsonl"):
        (tmp_path / name).write_bytes((secagg_dir / name).read_bytes())
    return tmp_path


def _problem_lines(run: Path) -> list[int]:
    out = _verify(str(run), "--json")
    assert out.exit_code == 1, out.output
    return [p["line"] for p in json.loads(out.stdout)["problems"]]


def test_a_secagg_run_verifies_and_shows(secagg_copy: Path) -> None:
    result = _verify(str(secagg_copy))
    assert result.exit_code == 0, result.output
    assert "2 round(s) aggregated" in result.output
    shown = runner.invoke(app, ["transcript", "show", str(secagg_copy)], env={"COLUMNS": "160"})
    assert shown.exit_code == 0, shown.output
    assert "protocol round index 1 (session 0, secagg): aggregated" in shown.output
    assert "dropped: silent in MaskedInput" in shown.output
    assert "dropped: silent in Unmask" in shown.output
    data = json.loads(runner.invoke(app, ["transcript", "show", str(secagg_copy), "--json",
                                          "--round", "1"]).stdout)
    (round1,) = data["rounds"]
    status = {p["party"]: p["status"] for p in round1["parties"]}
    assert status["h4"] == "dropped: silent in MaskedInput" and status["h2"] == "survivor"
    stages = [s[0] for s in round1["stages"]]
    assert stages[0] == "AdvertiseKeys" and stages[-1] == "Release"


def test_every_single_byte_flip_exits_1_naming_its_line(secagg_copy: Path) -> None:
    path = secagg_copy / "transcript.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    for i in range(1, len(lines)):  # line 1 is the header: flipping it is exit 3 or 1
        flipped = bytearray(lines[i])
        flipped[len(flipped) // 2] ^= 0x01
        path.write_bytes(b"".join([*lines[:i], bytes(flipped), *lines[i + 1:]]))
        assert _problem_lines(secagg_copy)[0] == i + 1, i + 1
        if i % 20 == 1:  # and as a person reads it
            out = _verify(str(secagg_copy))
            assert out.exit_code == 1 and f"line {i + 1}:" in out.output


def test_deleting_tail_lines_exits_1(secagg_copy: Path) -> None:
    path = secagg_copy / "transcript.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    kinds = [json.loads(raw)["kind"] for raw in lines]
    last_round = len(lines) - 1 - kinds[:-1][::-1].index("round_close")
    for cut in range(1, len(lines) - last_round):
        path.write_bytes(b"".join(lines[:-cut]))
        assert _problem_lines(secagg_copy)[0] == len(lines) - cut
    path.write_bytes(b"".join(lines[:last_round]))  # a clean cut between two rounds...
    assert _verify(str(secagg_copy)).exit_code == 0
    out = _verify(str(secagg_copy), "--expect-rounds", "2")  # ...needs the round count
    assert out.exit_code == 1 and "1 aggregated round(s), 2 expected" in out.output


def test_deleting_a_middle_line_and_rechaining_exits_1(secagg_copy: Path) -> None:
    """The aggregator holds its own key: it deletes one of its messages and re-signs
    its chain. The survivors' co-signed record list still pins the deleted record."""
    path = secagg_copy / "transcript.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    victim = next(i for i, raw in enumerate(lines)
                  if json.loads(raw).get("stage") == "UnmaskRequest" and json.loads(raw)["round"] == 1)
    keys = SECAGG_IDS.signing_key("aggregator")
    del lines[victim]
    head, out = None, []
    for raw in lines:
        rec = json.loads(raw)
        if rec["sender"] == "aggregator":
            rec["seq"], rec["prev"] = (0, None) if head is None else (head[0] + 1, head[1])
            body = {k: v for k, v in rec.items() if k != "sig"}
            rec["sig"] = keys.sign(RECORD_DOMAIN + canonical_json(body)).hex()
            raw = canonical_json(rec) + b"\n"
            head = (rec["seq"], hashlib.sha256(raw[:-1]).hexdigest())
        out.append(raw)
    path.write_bytes(b"".join(out))
    result = _verify(str(secagg_copy))
    assert result.exit_code == 1
    assert _problem_lines(secagg_copy)[0] == victim + 1
    assert f"line {victim + 1}: record differs from the one round 1's close lists" in result.output


# -- roster pinning: the roster beside the transcript is the aggregator's word ----------------
def _run_dir(root: Path, ids: Identities, protocol_name: str = "plain", *, rounds: int = 2,
             first: int = 0, append: bool = False) -> Path:
    protocol = make_protocol(protocol_name)
    save_roster(root / "roster.json", ids.roster(), append=append)
    rng = np.random.default_rng(first)
    with TranscriptWriter.open(root / "transcript.jsonl", identities=ids,
                               protocol=protocol) as tw:
        for r in range(first, first + rounds):
            inputs = {c: ClientInput(vector=rng.normal(size=4), weight=1.0) for c in ids.client_ids}
            run_round(protocol, round_index=r, inputs=inputs, identities=ids, transcript=tw)
    return root


def test_an_unpinned_roster_verifies_but_says_it_proves_nothing(run_dir: Path) -> None:
    result = _verify(str(run_dir))
    assert result.exit_code == 0 and "verified" in result.output
    assert "roster not pinned" in result.output and "proves nothing" in result.output
    report = json.loads(_verify(str(run_dir), "--json").stdout)
    assert report["roster_pinned"] is False and "roster not pinned" in report["notes"][0]


def test_a_pinned_roster_digest_verifies(run_dir: Path, tmp_path_factory) -> None:
    (roster,) = load_rosters(run_dir / "roster.json")
    result = _verify(str(run_dir), "--roster-sha256", roster.digest.upper())
    assert result.exit_code == 0, result.output
    assert "not pinned" not in result.output
    report = json.loads(_verify(str(run_dir), "--roster-sha256", roster.digest, "--json").stdout)
    assert report["ok"] is True and report["roster_pinned"] is True and report["notes"] == []
    own_copy = tmp_path_factory.mktemp("reviewer") / "roster.json"
    own_copy.write_bytes((run_dir / "roster.json").read_bytes())
    pinned_file = json.loads(_verify(str(run_dir), "--roster", str(own_copy), "--json").stdout)
    assert pinned_file["roster_pinned"] is True
    # The run directory's own file, named explicitly, is still the aggregator's word.
    beside = json.loads(_verify(str(run_dir), "--roster", str(run_dir / "roster.json"),
                                "--json").stdout)
    assert beside["roster_pinned"] is False


def test_a_re_keyed_run_passes_only_unpinned(run_dir: Path, tmp_path_factory) -> None:
    """Finding 4: the aggregator re-keys every party, re-signs every record and
    co-signature and rewrites the roster (here: another run's whole directory put in
    place of this one). Only the digest the reviewer pinned tells them apart."""
    (pinned,) = load_rosters(run_dir / "roster.json")
    forged = _run_dir(tmp_path_factory.mktemp("forged"), Identities.generate(["h0", "h1", "h2"]))
    for name in ("roster.json", "transcript.jsonl"):
        (run_dir / name).write_bytes((forged / name).read_bytes())
    assert _verify(str(run_dir)).exit_code == 0  # the unpinned default cannot tell
    result = _verify(str(run_dir), "--roster-sha256", pinned.digest)
    assert result.exit_code == 1
    (forged_roster,) = load_rosters(forged / "roster.json")
    assert (f"line 1: session 0's roster {forged_roster.digest[:16]}... is not the pinned "
            f"roster ({pinned.digest[:16]}...)") in result.output


def test_every_session_needs_its_pinned_roster(tmp_path: Path) -> None:
    first, second = Identities.generate(["h0", "h1"]), Identities.generate(["h0", "h1"])
    _run_dir(tmp_path, first)
    _run_dir(tmp_path, second, first=2, append=True)  # a resume: new keys, roster appended
    digests = [first.roster().digest, second.roster().digest]
    both = _verify(str(tmp_path), "--roster-sha256", digests[0], "--roster-sha256", digests[1])
    assert both.exit_code == 0, both.output
    one = _verify(str(tmp_path), "--roster-sha256", digests[1], "--json")
    assert one.exit_code == 1
    (problem,) = json.loads(one.stdout)["problems"]
    assert problem["line"] == 1 and "is not the pinned roster" in problem["message"]


def test_a_malformed_roster_digest_is_bad_usage(run_dir: Path) -> None:
    result = _verify(str(run_dir), "--roster-sha256", "abc")
    assert result.exit_code == 2 and "64 hex digits" in result.output


# -- show ---------------------------------------------------------------------------------------
def test_show_of_a_missing_round_is_one_line_and_exit_2(run_dir: Path) -> None:
    result = runner.invoke(app, ["transcript", "show", str(run_dir), "--round", "99"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {run_dir / 'transcript.jsonl'} has no round 99 (rounds 0..1)"]


def test_a_tee_round_says_it_is_simulated(tmp_path: Path) -> None:
    _run_dir(tmp_path, Identities.generate(["h0", "h1", "h2"]), "tee", rounds=1)
    shown = runner.invoke(app, ["transcript", "show", str(tmp_path)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and SIMULATED_NOTICE in shown.output
    (round0,) = json.loads(runner.invoke(app, ["transcript", "show", str(tmp_path),
                                               "--json"]).stdout)["rounds"]
    assert round0["notice"] == SIMULATED_NOTICE
    verified = _verify(str(tmp_path))
    assert verified.exit_code == 0 and SIMULATED_NOTICE in verified.output
    assert SIMULATED_NOTICE in json.loads(_verify(str(tmp_path), "--json").stdout)["notes"]


def test_verify_of_a_missing_directory_names_it(tmp_path: Path) -> None:
    result = _verify(str(tmp_path / "no-such-run"))
    assert result.exit_code == 3
    assert f"no run directory or transcript at {tmp_path / 'no-such-run'}" in " ".join(
        result.output.split())
