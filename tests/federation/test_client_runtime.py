"""The client-side logic the in-process runner and a Flower node share."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

import securediff.federation.start as start_module
from securediff.federation.client_runtime import (
    ClientStep,
    clip_update,
    members_id,
    planned_ledger,
)
from securediff.federation.setup import set_up_run
from securediff.privacy.ledger import (
    ForwardNoiseEvent,
    PrivacyLedger,
    RandomizedResponseEvent,
    Release,
)
from securediff.run import load_config

from .test_rounds import SMALL, _run


def test_clip_update_scales_only_an_update_longer_than_the_bound():
    update = np.array([3.0, 4.0])
    np.testing.assert_allclose(clip_update(update, 1.0), [0.6, 0.8])
    assert clip_update(update, 5.0) is update
    assert clip_update(update, 0.0) is update  # 0: not clipped


def test_a_client_step_writes_the_ledgers_before_any_update_is_handed_back():
    order: list = []

    class Strategy:
        uses_noised_data = True

        def local_update(self, client, round_index, dp):
            order.append(("shared", client.client_id, round_index, dp))
            return np.array([3.0, 4.0])

        def personal_train(self, client, round_index, dp):
            order.append(("personal", client.client_id, round_index, dp))

    clients = [SimpleNamespace(client_id=cid, model=model,
                               ledger=PrivacyLedger(client_id=cid, budget_epsilon=10.0, delta=1e-5))
               for cid, model in (("a", object()), ("b", None))]
    for client in clients:  # x~, which the release reads
        client.ledger.charge(ForwardNoiseEvent(sigma=10.0, clip_norm=1.0, t0=500,
                                               data_id=members_id(client.client_id)))
    step = ClientStep(strategy=Strategy(), round_index=2, dp=lambda client, artefact: None,
                      write_ledgers=lambda: order.append("write"), update_clip=1.0, run_id="run")
    updates = step.shared_updates(clients)
    assert order == [("shared", "a", 2, None), ("shared", "b", 2, None), "write"]
    for update in updates:
        np.testing.assert_allclose(update, [0.6, 0.8])
    for client in clients:  # a plain run's release: x~ read directly
        assert client.ledger.releases == (Release("run", "shared", through_dpsgd_only=False),)
    step.personal(clients)  # only a client with a personal model trains one
    assert order[3:] == [("personal", "a", 2, None)]


def test_a_planned_ledger_charges_the_noising_only_where_the_ledger_lacks_it():
    config = load_config(None, {**SMALL, "privacy": {"labels": "randomized-response"}})
    setup = set_up_run(config)
    cid = setup.client_ids[0]
    first = planned_ledger(setup, cid, {}, rounds_left=2)
    assert [type(e) for e in first.events] == [ForwardNoiseEvent, RandomizedResponseEvent]
    again = planned_ledger(setup, cid, {}, rounds_left=2, held=first)
    assert again.events == first.events


def test_the_runner_writes_every_ledger_before_the_noised_data(tmp_path, monkeypatch):
    noised_on_disk = []
    real_save = start_module.save_tensors

    def save(path, tensors, *args, **kwargs):
        ledgers = json.loads((path.parent.parent / "ledger.json").read_text())
        noised_on_disk.extend(members_id(cid) in PrivacyLedger.from_dict(led).noised_data_ids()
                              for cid, led in ledgers.items())
        return real_save(path, tensors, *args, **kwargs)

    monkeypatch.setattr(start_module, "save_tensors", save)
    run = _run(tmp_path)
    assert noised_on_disk == [True] * len(run.state.clients)
