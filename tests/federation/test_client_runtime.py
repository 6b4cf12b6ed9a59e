"""The client-side logic the in-process runner and a Flower node share."""

from __future__ import annotations

import numpy as np

from securediff.federation.client_runtime import clip_update, planned_ledger
from securediff.federation.setup import plan_run
from securediff.privacy.ledger import ForwardNoiseEvent, RandomizedResponseEvent
from securediff.run import load_config

from .test_rounds import SMALL


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
