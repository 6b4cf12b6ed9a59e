"""The client-side logic the in-process runner and a Flower node share."""

from __future__ import annotations

import json

import numpy as np

import securediff.federation.start as start_module
from securediff.federation.client_runtime import clip_update, members_id, planned_ledger
from securediff.federation.setup import plan_run
from securediff.privacy.ledger import ForwardNoiseEvent, PrivacyLedger, RandomizedResponseEvent
from securediff.run import load_config

from .test_rounds import SMALL, _run


def test_clip_update_scales_only_an_update_longer_than_the_bound():
    update = np.array([3.0, 4.0])
    np.testing.assert_allclose(clip_update(update, 1.0), [0.6, 0.8])
    assert clip_update(update, 5.0) is update
    assert clip_update(update, 0.0) is update  # 0: not clipped


def test_a_planned_ledger_charges_the_noising_only_where_the_ledger_lacks_it():
    config = load_config(None, {**SMALL, "privacy": {"labels": "randomized-response"}})
    plan = plan_run(config)
    cid = plan.client_ids[0]
    first = planned_ledger(plan, cid, {}, rounds_left=2)
    assert [type(e) for e in first.events] == [ForwardNoiseEvent, RandomizedResponseEvent]
    again = planned_ledger(plan, cid, {}, rounds_left=2, held=first)
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
