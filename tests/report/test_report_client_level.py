"""The run report's epsilon by round: client-level rounds charge every client every round."""

import pytest

from securediff.privacy.client_level import ClientLevelEvent
from securediff.privacy.ledger import PrivacyLedger
from securediff.run_report.epsilon import epsilon_by_round


def test_client_level_rounds_count_whether_or_not_the_client_was_sampled():
    event = ClientLevelEvent(mechanism="gaussian", clip_norm=1.0, sample_rate=0.5, steps=3,
                             noise_added_by="aggregator", noise_multiplier=2.0)
    ledger = PrivacyLedger(client_id="a", budget_epsilon=100.0, delta=1e-5, events=[event])
    rows = epsilon_by_round({"a": ledger}, [{"clients": ["a"]}, {"clients": []}, {"clients": []}])
    a = [row["clients"]["a"] for row in rows]
    assert a[0] is None and a[1] < a[2] < a[3]  # charged in rounds a was not sampled in too
    assert a[3] == pytest.approx(ledger.epsilon("shared"))
