"""A resumed run claims all its releases jointly: the DP-SGD steps before the crash
and after the resume compose in the DP-SGD view, the forward noise (charged once)
in the other, and the smaller holds (one run reads x~ one way throughout). The
statement's claim equals that, computed here from the ledger's events with the
accountant called directly, and is never below what the ledger claimed at the
crash."""

import json

from typer.testing import CliRunner

from cli.app import app
from securediff.privacy.accountants import compose_epsilon
from securediff.privacy.ledger import PrivacyLedger, event_from_dict
from securediff.storage import read_json

from .conftest import at_checkpoint, no_checkpoint_hooks

cli = CliRunner()
ACCOUNTANT, DELTA = "rdp", 1e-5
DPSGD = ["--privacy.dpsgd_shared", "true", "--privacy.dpsgd_epsilon", "2.0",
         "--privacy.accountant", ACCOUNTANT]


class Crash(Exception):
    pass


def _joint(events: list[dict]) -> float:
    """min(forward-noise view, DP-SGD view) of one client's shared events."""
    shared = [event_from_dict(e) for e in events if e["artefact"] == "shared"]
    made_x = [e for e in shared if not (e.kind == "dpsgd" and e.input == "noised")]
    steps_and_others = [e for e in shared if e.kind not in ("forward_noise", "randomized_response")]
    return min(compose_epsilon(made_x, delta=DELTA, accountant=ACCOUNTANT),
               compose_epsilon(steps_and_others, delta=DELTA, accountant=ACCOUNTANT,
                               relation="replace_one"))


def test_a_resumed_dpsgd_run_claims_every_round_jointly(tmp_path, tiny_args, monkeypatch):
    def crash_after_first_round(run, n):
        if run.state.rounds_done == 1:
            raise Crash("simulated crash")

    at_checkpoint(monkeypatch, "after", crash_after_first_round)
    args = ["train", "--insecure-deterministic", "3", "--json", *tiny_args, *DPSGD]
    assert isinstance(cli.invoke(app, [*args, "--run.name", "cut"]).exception, Crash)
    staging = tmp_path / "runs" / "cut.incomplete"
    at_crash = {cid: PrivacyLedger.from_dict(led).epsilon("shared")
                for cid, led in read_json(staging / "ledger.json").items()}
    no_checkpoint_hooks(monkeypatch)

    resumed = cli.invoke(app, ["train", "--resume", str(staging), "--json"])
    assert resumed.exit_code == 0, resumed.output
    done = tmp_path / "runs" / "cut"
    ledgers = read_json(done / "ledger.json")
    for cid, led in ledgers.items():
        assert led["releases"] == []  # one run's ledger: its release is read from its events
        steps = [e["steps"] for e in led["events"] if e["kind"] == "dpsgd"]
        assert steps == [2 * 3]  # both rounds' steps (local_steps 3), in one event
        claim = PrivacyLedger.from_dict(led).epsilon("shared")
        assert claim == _joint(led["events"]) and claim >= at_crash[cid]
    statement = json.loads((done / "privacy_statement.json").read_text())
    assert statement["headline"]["epsilon"] == max(_joint(led["events"]) for led in ledgers.values())
    who = {r["artefact"]: r["who_sees_it"] for r in statement["rows"]}
    assert "checkpoints/noised-data.safetensors" in who["noised data x~"]
