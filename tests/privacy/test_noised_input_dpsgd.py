"""DP-SGD that trains only on PFDM's once-noised data is a second view of the
shared artefact: its epsilon is the smaller of the two views, never their
composition (far larger, whichever way replace-one is accounted)."""

import math

import pytest

from securediff.errors import ConfigError
from securediff.privacy.accountants import compose, compose_epsilon
from securediff.privacy.ledger import (
    DPSGDEvent,
    ForwardNoiseEvent,
    PrivacyLedger,
    QuantileCountEvent,
    event_from_dict,
)

FORWARD = ForwardNoiseEvent(sigma=8.0, clip_norm=1.0, t0=500, data_id="c/members")
STEPS = DPSGDEvent(1.1, 0.05, 300, "shared", input="noised")


def _ledger(*events):
    ledger = PrivacyLedger(client_id="c", budget_epsilon=1e6, delta=1e-5)
    for e in events:
        ledger.charge(e)
    return ledger


def test_the_smaller_view_counts_and_equals_a_direct_computation() -> None:
    eps = _ledger(FORWARD, STEPS).epsilon("shared")
    forward_alone = compose_epsilon([FORWARD], delta=1e-5)
    steps_as_replace_one = compose_epsilon([STEPS], delta=1e-5, relation="replace_one")
    assert eps == pytest.approx(min(forward_alone, steps_as_replace_one))
    # Composing both (what raw-input DP-SGD would cost) is strictly more.
    raw = DPSGDEvent(1.1, 0.05, 300, "shared")
    assert _ledger(FORWARD, raw).epsilon("shared") > eps


def test_a_large_dpsgd_epsilon_no_longer_makes_the_claim_infinite() -> None:
    strong = DPSGDEvent(0.6, 0.25, 300, "shared", input="noised")  # epsilon far above 10
    raw = DPSGDEvent(0.6, 0.25, 300, "shared")
    # Their composition: group privacy could certify no epsilon at all; the direct
    # replace-one analysis gives 146.8 (measured), far above the forward noise's.
    composed = compose([FORWARD, raw], delta=1e-5)
    assert composed.method == "direct" and 100.0 < composed.epsilon < math.inf
    assert _ledger(FORWARD, strong).epsilon("shared") == pytest.approx(compose_epsilon([FORWARD], delta=1e-5))


def test_released_counts_stay_in_both_views() -> None:
    count = QuantileCountEvent(noise_std=4.0, steps=12, data_id="c/members")
    both = _ledger(count, FORWARD, STEPS).epsilon("shared")
    assert both > _ledger(FORWARD, STEPS).epsilon("shared")
    assert both == pytest.approx(min(compose_epsilon([count, FORWARD], delta=1e-5),
                                     compose_epsilon([count, STEPS], delta=1e-5, relation="replace_one")))


def test_the_input_survives_a_round_trip_and_old_ledgers_still_load() -> None:
    assert event_from_dict(STEPS.to_dict()) == STEPS
    old = DPSGDEvent(1.1, 0.05, 3, "shared").to_dict()
    assert "input" not in old and event_from_dict(old).input == "raw"
    with pytest.raises(ConfigError, match="input must be"):
        DPSGDEvent(1.1, 0.05, 3, "shared", input="x~")


def test_steps_on_different_inputs_do_not_merge() -> None:
    ledger = _ledger(DPSGDEvent(1.1, 0.05, 3, "shared"), DPSGDEvent(1.1, 0.05, 3, "shared", input="noised"))
    assert [e.input for e in ledger.events] == ["raw", "noised"]
