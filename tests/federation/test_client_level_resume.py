"""A crash mid-round leaves a client-level charge merged into the recorded event;
the resume must see it as the stale round's charge, not as a shorter ledger."""

from securediff.federation.stale_charges import stale_events
from securediff.privacy.client_level import ClientLevelEvent


def _event(steps: int) -> ClientLevelEvent:
    return ClientLevelEvent(mechanism="gaussian", clip_norm=1.0, sample_rate=0.5, steps=steps,
                            noise_added_by="aggregator", noise_multiplier=1.5)


def test_a_merged_client_level_round_is_the_stale_charge():
    assert stale_events([_event(3)], [_event(4)]) == [_event(1)]
    assert stale_events([_event(3)], [_event(3)]) == []


def test_fewer_client_level_rounds_than_recorded_is_refused():
    assert stale_events([_event(4)], [_event(3)]) is None
