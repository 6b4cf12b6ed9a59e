"""Releases made from the same noised data x~ are claimed jointly: the smaller of
the forward-noise and DP-SGD views holds only while every release read x~ through
DP-SGD steps alone; one release that read x~ directly leaves the forward-noise
view, and no later run lowers it. Each claim is checked against the accountant
called directly on the events."""

import json

import pytest

from securediff.errors import BudgetExceededError, PrivacyError
from securediff.privacy.accountants import compose_epsilon
from securediff.privacy.ledger import (
    DPSGDEvent,
    ForwardNoiseEvent,
    PrivacyLedger,
    RandomizedResponseEvent,
    Release,
)
from securediff.statement import NOISED_DATA_IN_RUN_DIR, NOISED_DATA_ON_NODE, privacy_statement

DELTA, ACCOUNTANT = 1e-5, "rdp"  # rdp: milliseconds per claim
# Forward noise near the default t0's (about 10), DP-SGD far stronger (about 4.3).
FORWARD = ForwardNoiseEvent(sigma=1.0, clip_norm=1.0, t0=500, data_id="c/members")
LABELS = RandomizedResponseEvent(epsilon=0.5, num_classes=10)
STEPS = DPSGDEvent(1.5, 0.05, 100, "shared", input="noised")
PLAIN_A = Release("runA", "shared", through_dpsgd_only=False)
DPSGD_B = Release("runB", "shared", through_dpsgd_only=True)
DPSGD_C = Release("runC", "shared", through_dpsgd_only=True)


def _ledger(*events) -> PrivacyLedger:
    ledger = PrivacyLedger(client_id="c", budget_epsilon=1e6, delta=DELTA, accountant=ACCOUNTANT)
    for e in events:
        ledger.charge(e)
    return ledger


def _forward_view(*events) -> float:
    return compose_epsilon(list(events), delta=DELTA, accountant=ACCOUNTANT)


def _dpsgd_view(*steps) -> float:
    return compose_epsilon(list(steps), delta=DELTA, accountant=ACCOUNTANT, relation="replace_one")


def test_a_dpsgd_run_after_a_plain_run_keeps_the_forward_noise_claim() -> None:
    ledger = _ledger(FORWARD, LABELS)
    first = ledger.record_release(PLAIN_A)  # run A: plain PFDM, reads x~ directly
    assert first == pytest.approx(_forward_view(FORWARD, LABELS))
    ledger.charge(STEPS)  # run B: DP-SGD on the same x~
    ledger.record_release(DPSGD_B)
    joint = ledger.epsilon("shared")
    assert joint == pytest.approx(_forward_view(FORWARD, LABELS)) and joint >= first
    # The min rule taken across the two runs would claim the DP-SGD view: far less.
    under = min(_forward_view(FORWARD, LABELS), _dpsgd_view(STEPS))
    assert under < 0.5 * joint
    # The summary (privacy ledger CLI) composes the same events by every accountant.
    assert ledger.summary()["artefacts"]["shared"]["epsilon"][ACCOUNTANT] == pytest.approx(joint)


def test_dpsgd_only_releases_compose_their_steps_and_take_the_smaller_view() -> None:
    ledger = _ledger(FORWARD, LABELS, STEPS)
    b = ledger.record_release(DPSGD_B)
    assert b == pytest.approx(min(_forward_view(FORWARD, LABELS), _dpsgd_view(STEPS)))
    more = DPSGDEvent(1.5, 0.05, 200, "shared", input="noised")
    ledger.charge(more)  # merges into run B's event: 300 steps in all
    ledger.record_release(DPSGD_C)
    both = ledger.epsilon("shared")
    assert both == pytest.approx(min(_forward_view(FORWARD, LABELS),
                                     _dpsgd_view(DPSGDEvent(1.5, 0.05, 300, "shared", input="noised"))))
    assert both > b


def test_from_the_first_release_the_claim_never_decreases() -> None:
    ledger = _ledger(FORWARD)
    claims = []
    for step in (STEPS, DPSGD_B, PLAIN_A, DPSGDEvent(2.0, 0.1, 50, "shared", input="noised"), DPSGD_C):
        if isinstance(step, Release):
            claims.append(ledger.record_release(step))
        else:
            ledger.charge(step)
            if ledger.releases:
                claims.append(ledger.epsilon("shared"))
    assert claims == sorted(claims) and claims[-1] == pytest.approx(_forward_view(FORWARD))


def test_a_dpsgd_release_needs_its_steps_charged_first_and_a_run_reads_one_way() -> None:
    ledger = _ledger(FORWARD)
    with pytest.raises(PrivacyError, match="no DP-SGD steps"):
        ledger.record_release(DPSGD_B)
    ledger.charge(STEPS)
    ledger.record_release(DPSGD_B)
    assert ledger.record_release(DPSGD_B) == ledger.epsilon("shared")  # again: nothing changes
    assert ledger.releases == (DPSGD_B,)
    with pytest.raises(PrivacyError, match="another way"):
        ledger.record_release(Release("runB", "shared", through_dpsgd_only=False))


def test_a_release_past_the_budget_is_refused_and_the_ledger_unchanged() -> None:
    ledger = _ledger(FORWARD, STEPS)
    ledger.budget_epsilon = 0.5 * (_forward_view(FORWARD) + _dpsgd_view(STEPS))
    ledger.record_release(DPSGD_B)
    with pytest.raises(BudgetExceededError, match="runA"):
        ledger.record_release(PLAIN_A)
    assert ledger.releases == (DPSGD_B,)


def test_releases_survive_the_round_trip_and_old_ledgers_still_load() -> None:
    ledger = _ledger(FORWARD, STEPS)
    ledger.record_release(DPSGD_B)
    again = PrivacyLedger.from_json(ledger.to_json())
    assert again.releases == (DPSGD_B,) and again.epsilon("shared") == ledger.epsilon("shared")
    old = json.loads(ledger.to_json())
    del old["releases"]  # a ledger written before releases were recorded: one run's events
    assert PrivacyLedger.from_dict(old).epsilon("shared") == pytest.approx(
        min(_forward_view(FORWARD), _dpsgd_view(STEPS)))


def test_the_statement_names_where_the_noised_data_is_stored_and_who_reads_it() -> None:
    def who(**kw) -> str:
        statement = privacy_statement(
            strategy="pfdm", protocol_secure=True, protocol_name="secagg", private=True,
            delta=DELTA, t0=675, clip_norm=10.0, forward_exact=9.969, forward_classic=11.566,
            shared_epsilon=9.969, personal_epsilon=float("inf"), accountant="pld",
            labels="public", label_epsilon=1.0, **kw)
        return {r["artefact"]: r["who_sees_it"] for r in statement["rows"]}["noised data x~"]

    assert NOISED_DATA_IN_RUN_DIR in who() and "checkpoints/noised-data.safetensors" in who()
    assert "whoever has the run directory" in who()
    node = who(noised_data_stored=NOISED_DATA_ON_NODE)
    assert "STATE-DIR/noised-data.safetensors" in node and "state dir" in node
