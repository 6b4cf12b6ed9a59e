"""The statistics release in a run ([stats] release = true): planned into the
budget, released once before the first round with the ledgers written first,
committed to the run directory, loaded (not repeated) on resume, named in the
privacy statement; and the configs it is refused for, each naming its field."""

from __future__ import annotations

import json

import numpy as np
import pytest

import securediff.federation.stats_phase as stats_phase
from securediff.errors import ConfigError
from securediff.federation.runner import FederatedRun
from securediff.federation.setup import set_up_run
from securediff.federation.stats_phase import (
    RELEASE_JSON,
    RELEASE_TRANSCRIPT,
    load_release,
    plan_release,
)
from securediff.rng import RandomSource
from securediff.run import load_config
from securediff.statement import privacy_statement, statement_markdown
from securediff.storage import RunDirectory, read_json

from .test_rounds import SMALL

RELEASE = {"release": True, "clip": 4.0, "epsilon": 2.0}


def _config(tmp_path, *, protocol="secagg", strategy="fedavg", stats=None, privacy=None, **sections):
    privacy = {"accountant": "rdp" if protocol == "secagg" else "pld", **(privacy or {})}
    return load_config(None, {
        **SMALL, "run": {**SMALL["run"], "out_dir": str(tmp_path)},
        "federation": {**SMALL["federation"], "protocol": protocol, "strategy": strategy},
        "privacy": privacy, "stats": {**RELEASE, **(stats or {})}, **sections})


def _kinds(run: FederatedRun) -> list[list[str]]:
    return [[e.kind for e in c.ledger.events] for c in run.state.clients]


def _sessions(run_dir: RunDirectory) -> int:
    records = [json.loads(line) for line in run_dir.file(RELEASE_TRANSCRIPT).read_text().splitlines()]
    return sum(r["kind"] == "header" for r in records)


def test_a_secagg_run_releases_once_before_round_0_and_its_statement_names_it(tmp_path):
    # pfdm with DP-SGD on the shared model: every round charges the ledgers.
    config = _config(tmp_path, strategy="pfdm", privacy={"dpsgd_shared": True})
    run = FederatedRun(set_up_run(config), RunDirectory.create(tmp_path, "r"))

    def crash(r: FederatedRun, point: str) -> None:
        if r.state.rounds_done == 1 and point == "after":
            raise KeyboardInterrupt

    run.checkpoint_hooks = [crash]
    run.set_up(resume=False)
    with pytest.raises(KeyboardInterrupt):
        run.train()
    for kinds in _kinds(run):
        assert kinds.count("skellam_release") == 1
        assert kinds.index("forward_noise") < kinds.index("skellam_release") < kinds.index("dpsgd")
    stored = load_release(run.run_dir)
    record = stored.record
    assert record["mechanism"] == "skellam" and record["noise_added_by"] == "clients"
    assert record["relation"] == "replace_one"  # pfdm's shared claim (forward noise)
    assert record["epsilon"]["replace_one"] <= 2.0 + 1e-9
    assert record["contributors"] == [c.client_id for c in run.state.clients]
    assert int(stored.stats.counts.sum()) == sum(c.num_members for c in run.state.clients)
    assert stored.noisy_vector.shape == (record["size"],)

    # Resume: the committed release is loaded, not repeated; no new charge, no new session.
    run.run_dir.release()
    digest = read_json(run.run_dir.file(RELEASE_JSON))["tensors_sha256"]
    again = FederatedRun(set_up_run(config), RunDirectory.open_incomplete(run.run_dir.path))
    again.set_up(resume=True)
    again.train()
    assert again.state.rounds_done == 2
    for kinds in _kinds(again):
        assert kinds.count("skellam_release") == 1
    assert read_json(again.run_dir.file(RELEASE_JSON))["tensors_sha256"] == digest
    assert _sessions(again.run_dir) == 1

    statement = privacy_statement(
        strategy="pfdm", protocol_secure=True, protocol_name="secagg", private=False, delta=1e-5, t0=10,
        clip_norm=1.0, forward_exact=1.0, forward_classic=1.0, shared_epsilon=3.0, personal_epsilon=np.inf,
        accountant="rdp", labels="public", label_epsilon=1.0, stats_release=again.stats_release.record)
    (row,) = [r for r in statement["rows"] if r["artefact"].startswith("feature statistics")]
    assert "Skellam shares added by the clients" in row["guarantee"]
    assert row["guarantee"].startswith("NOT PRIVATE") and "replace-one per image" in row["guarantee"]
    assert f"epsilon = {record['epsilon']['replace_one']:.3f}" in row["guarantee"]
    assert "feature statistics" in statement_markdown(statement)


def test_a_crash_between_the_charge_and_the_commit_releases_again_and_charges_again(tmp_path, monkeypatch):
    config = _config(tmp_path)
    run = FederatedRun(set_up_run(config), RunDirectory.create(tmp_path, "r"))
    run.set_up(resume=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(stats_phase, "save_tensors", killed)
        with pytest.raises(KeyboardInterrupt):
            run.train()
    assert not run.run_dir.file(RELEASE_JSON).exists()
    on_disk = read_json(run.run_dir.file("ledger.json"))
    assert all([e["kind"] for e in ledger["events"]].count("skellam_release") == 1
               for ledger in on_disk.values())  # written before anything left a client

    run.run_dir.release()
    seen = []
    again = FederatedRun(set_up_run(config), RunDirectory.open_incomplete(run.run_dir.path),
                         progress=lambda event, info: seen.append(event))
    again.set_up(resume=True)
    again.train()
    for kinds in _kinds(again):
        assert kinds.count("skellam_release") == 2  # the first charge stays
    assert "ledger_recharge" in seen
    assert load_release(again.run_dir).record["round_index"] == 1  # a new protocol round index
    assert load_release(again.run_dir).record["relation"] == "add_remove"  # fedavg's shared claim
    assert _sessions(again.run_dir) == 2


def test_plain_gives_the_aggregators_gaussian_release(tmp_path):
    config = _config(tmp_path, protocol="plain")
    run = FederatedRun(set_up_run(config), RunDirectory.create(tmp_path, "r"))
    run.set_up(resume=False)
    run.train()
    for kinds in _kinds(run):
        assert kinds.count("gaussian_release") == 1
    record = load_release(run.run_dir).record
    assert record["mechanism"] == "gaussian" and record["noise_added_by"] == "aggregator"
    assert record["epsilon"]["add_remove"] <= 2.0 + 1e-6
    statement = privacy_statement(
        strategy="fedavg", protocol_secure=False, protocol_name="plain", private=False, delta=1e-5, t0=10,
        clip_norm=1.0, forward_exact=1.0, forward_classic=1.0, shared_epsilon=np.inf, personal_epsilon=np.inf,
        accountant="pld", labels="public", label_epsilon=1.0, stats_release=record)
    (row,) = [r for r in statement["rows"] if r["artefact"].startswith("feature statistics")]
    assert "NOT the aggregator" in row["who_sees_it"]


def test_clip_0_takes_the_public_median_and_the_moment_its_principal_directions(tmp_path):
    config = _config(tmp_path, stats={"clip": 0.0, "moment_rank": 5},
                     public={"dataset": "font-digits", "per_class": 3, "steps": 1})
    setup = set_up_run(config)
    release = plan_release(setup, public_source=RandomSource.insecure_from_seed(1))
    layout = release.stats.layout
    assert "median" in release.clip_from
    assert layout.clip_norm > 0
    p = layout.moment_projection
    assert p.shape == (5, layout.dim)
    assert np.allclose(p @ p.T, np.eye(5), atol=1e-8)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"federation": {"strategy": "local"}}, "stats.release"),
    ({"federation": {"protocol": "ckks"}}, "federation.protocol"),
    ({"privacy": {"accountant": "pld"}}, "privacy.accountant"),
    ({"privacy": {"accountant": "rdp", "labels": "randomized-response"}}, "privacy.labels"),
    ({"stats": {"clip": 0.0}}, "stats.clip"),
    ({"stats": {"moment_rank": 3}}, "stats.moment_rank"),
    ({"stats": {"epsilon": 0.0}}, "stats.epsilon"),
    ({"stats": {"feature_map": "pca"}}, "stats.feature_map"),
])
def test_configs_the_release_refuses_name_their_field(tmp_path, overrides, field):
    base = {**SMALL, "run": {**SMALL["run"], "out_dir": str(tmp_path)},
            "federation": {**SMALL["federation"], "protocol": "secagg", "strategy": "fedavg"},
            "privacy": {"accountant": "rdp"}, "stats": dict(RELEASE)}
    for section, values in overrides.items():
        base[section] = {**base.get(section, {}), **values}
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, base)
    assert not any(tmp_path.iterdir())  # refused before any file
