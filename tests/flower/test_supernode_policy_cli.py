"""`securediff flower supernode`: the node policy flags become node-config entries
that Flower parses back into the same policy, and a node keeps the roster it is
started with in its state dir, where a reviewer can pin it for `transcript verify`."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args
from typer.testing import CliRunner

from cli.app import app
from protocols import ProtocolAbort, make_protocol
from protocols.hazmat.keyfile import read_key_file
from protocols.remote import PartyIdentities
from protocols.roster import Identities, load_rosters
from securediff.flower.inputs import seeded_vectors
from securediff.flower.keys import keygen, make_roster
from securediff.flower.node import ClientNode, keep_roster
from securediff.flower.policy import NodePolicy

from . import test_remote_ckks_tee as remote_ckks
from . import test_remote_driver as remote

CLIENTS = remote.CLIENTS


def _supernode(args: list[str], roster: Path | str = "roster.json"):
    return CliRunner().invoke(app, [
        "flower", "supernode", "--client-id", "client-01", "--identity-key", "k.key",
        "--roster", str(roster), "--superlink", "127.0.0.1:9092", *args])


@pytest.fixture(autouse=True)
def in_a_directory_with_key_files(tmp_path, monkeypatch):
    """The files `_supernode` names by default exist (the command checks every path,
    a dry run included)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k.key").write_text("placeholder")
    (tmp_path / "roster.json").write_text("{}")


def _node_config(output: str) -> dict:
    argv = shlex.split(output.splitlines()[-1])
    return parse_config_args([argv[argv.index("--node-config") + 1]])


def test_policy_flags_reach_the_node_as_flower_parses_them(tmp_path):
    ran = _supernode(["--test-vectors", "--dry-run", "--threat-model", "honest-but-curious",
                      "--collusion-fraction", "0.1", "--secagg-security-bits", "30",
                      "--min-contributors", "3", "--allow-no-consistency-check"])
    assert ran.exit_code == 0, ran.output
    policy = NodePolicy.from_node_config(_node_config(ran.output))
    assert policy.threat_model == "honest-but-curious"
    assert (policy.secagg.collusion_fraction, policy.secagg.security_bits,
            policy.secagg.min_contributors) == (0.1, 30, 3)
    assert policy.secagg.require_consistency_check is False
    # No flag: the cautious defaults, and no policy entry in the node config.
    ran = _supernode(["--test-vectors", "--dry-run"])
    config = _node_config(ran.output)
    assert "threat-model" not in config and NodePolicy.from_node_config(config) == NodePolicy()


def test_the_documented_node_config_keys_have_flags():
    ran = _supernode(["--test-vectors", "--dry-run", "--min-survivors", "3",
                      "--ckks-min-flood-bits", "50", "--tee-min-svn", "2", "--tee-production",
                      "--allow-insecure-seed"])
    assert ran.exit_code == 0, ran.output
    config = _node_config(ran.output)
    assert (config["min-survivors"], config["ckks-min-flood-bits"], config["tee-min-svn"]) == (3, 50, 2)
    assert config["tee-production"] is True and config["allow-insecure-seed"] is True
    policy = NodePolicy.from_node_config(config)
    assert (policy.min_survivors, policy.ckks_min_flood_bits, policy.tee_min_svn,
            policy.tee_production) == (3, 50, 2, True)


@pytest.mark.parametrize("key, roster, extra, flag", [
    ("missing.key", "roster.json", [], "--identity-key"),
    ("k.key", "nowhere.json", [], "--roster"),
    ("k.key", "roster.json", ["--tee-root", "no-root.pem"], "--tee-root"),
])
def test_a_dry_run_checks_every_path(key, roster, extra, flag):
    ran = CliRunner().invoke(app, [
        "flower", "supernode", "--client-id", "client-01", "--identity-key", key, "--roster", roster,
        "--superlink", "127.0.0.1:9092", "--test-vectors", "--dry-run", *extra])
    assert ran.exit_code == 2 and flag in ran.output and "does not exist" in ran.output, ran.output


def test_keygen_and_roster_misuse_is_bad_usage(tmp_path):
    assert CliRunner().invoke(app, ["flower", "keygen", "../x", "--out", "keys"]).exit_code == 2
    assert CliRunner().invoke(app, ["flower", "keygen", "a", "--out", "keys"]).exit_code == 0
    again = CliRunner().invoke(app, ["flower", "keygen", "a", "--out", "keys"])
    assert again.exit_code == 2 and "exists" in again.output
    missing = CliRunner().invoke(app, ["flower", "roster", "keys/none.pub", "--out", "r.json"])
    assert missing.exit_code == 2 and "none.pub" in missing.output


@pytest.mark.parametrize(("flags", "why"), [
    (["--allow-no-consistency-check"], "needs threat-model = honest-but-curious"),
    (["--threat-model", "lenient"], "threat-model must be one of"),
    (["--collusion-fraction", "0.7"], "collusion_fraction"),
])
def test_a_bad_policy_stops_the_start(flags, why):
    ran = _supernode(["--test-vectors", "--dry-run", *flags])
    assert ran.exit_code == 2 and why in ran.output, ran.output


@pytest.fixture()
def keyed(tmp_path):
    """Key files and roster.json, as `flower keygen` and `flower roster` make them."""
    keys = tmp_path / "keys"
    keygen(["aggregator", *CLIENTS], keys)
    make_roster(sorted(keys.glob("*.pub")), aggregator="aggregator", out=keys / "roster.json")
    return keys


def test_the_node_keeps_its_roster_and_a_reviewer_pins_a_transcript_with_it(
        keyed, tmp_path, monkeypatch):
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda file, argv: started.append(argv))
    state = tmp_path / "state"
    ran = _supernode(["--state-dir", str(state)], roster=keyed / "roster.json")
    assert ran.exit_code == 0, ran.output
    kept = state / "roster.json"
    original = (keyed / "roster.json").read_bytes()
    assert kept.read_bytes() == original
    digest = load_rosters(kept)[-1].digest
    assert hashlib.sha256(original).hexdigest() in ran.output
    assert f"--roster-sha256 {digest}" in ran.output
    # The node runs with the kept copy, not the file it was handed.
    (argv,) = started
    assert f"roster='{kept}'" in argv[argv.index("--node-config") + 1]

    # A transcript of a round among these keys verifies against the kept roster.
    keys = {p: read_key_file(keyed / f"{p}.key") for p in ["aggregator", *CLIENTS]}
    identities = Identities(keys, aggregator_id="aggregator")
    roster = load_rosters(kept)[-1]
    nodes = {c: ClientNode(identities=PartyIdentities(roster, party=c, key=keys[c]),
                           inputs=seeded_vectors(remote.SEED, c), state={},
                           insecure_seed=remote.SEED) for c in CLIENTS}
    me = PartyIdentities(roster, party="aggregator", key=keys["aggregator"])
    world = (identities, roster, me, nodes, tmp_path / "transcript.jsonl")
    results, report = remote_ckks._rounds(make_protocol("secagg"), world, 1)
    assert report.ok and not isinstance(results[0], ProtocolAbort)
    verify = CliRunner().invoke(app, ["transcript", "verify", str(tmp_path / "transcript.jsonl"),
                                      "--roster", str(kept), "--roster-sha256", digest, "--json"])
    assert verify.exit_code == 0, verify.output
    assert json.loads(verify.output)["roster_pinned"] is True


def test_a_new_roster_replaces_the_kept_one_and_the_earlier_stays(keyed, tmp_path):
    state = tmp_path / "state"
    first = keep_roster(keyed / "roster.json", state)
    again = keep_roster(keyed / "roster.json", state)
    assert again == first and not (state / "rosters").exists()
    other = tmp_path / "other"
    keygen(["aggregator", "client-00", "client-01", "client-02"], other)
    make_roster(sorted(other.glob("*.pub")), aggregator="aggregator", out=other / "roster.json")
    second = keep_roster(other / "roster.json", state)
    assert second.sha256 != first.sha256
    assert (state / "roster.json").read_bytes() == (other / "roster.json").read_bytes()
    earlier = state / "rosters" / f"{first.sha256}.json"
    assert earlier.read_bytes() == (keyed / "roster.json").read_bytes()
    (tmp_path / "junk.json").write_text("{}")
    from protocols.errors import RosterError

    with pytest.raises(RosterError):
        keep_roster(tmp_path / "junk.json", state)
    assert (state / "roster.json").read_bytes() == (other / "roster.json").read_bytes()
    assert not (state / "roster.json.staged").exists()


def test_one_supernode_per_state_directory(keyed, tmp_path, monkeypatch):
    """A second node on the same state directory stops with the holder's name; the
    lock is inheritable so that it outlives the exec into flower-supernode."""
    import fcntl

    started: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda file, argv: started.append(argv))
    state = tmp_path / "state"
    first = _supernode(["--state-dir", str(state)], roster=keyed / "roster.json")
    assert first.exit_code == 0, first.output
    second = _supernode(["--state-dir", str(state)], roster=keyed / "roster.json")
    assert second.exit_code == 3 and f"in use by process {os.getpid()}" in second.output
    assert "Traceback" not in second.output and len(started) == 1
    held = [fd for fd in os.listdir("/proc/self/fd")
            if os.path.realpath(f"/proc/self/fd/{fd}") == str(state / ".lock")]
    assert held and all(os.get_inheritable(int(fd)) for fd in held)
    for fd in held:  # what the exec'd SuperNode's exit would do
        fcntl.flock(int(fd), fcntl.LOCK_UN)
        os.close(int(fd))
