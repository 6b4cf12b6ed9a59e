"""Client-level DP: its ledger event, accounting, calibration and aggregation round."""

from __future__ import annotations

import math

import numpy as np
import pytest

from securediff.config import Config
from securediff.errors import ConfigError
from securediff.federation.client_level import ClientLevelRound, clip_update, plan_client_level
from securediff.privacy.accountants import compose_epsilon, dpsgd_epsilon
from securediff.privacy.client_level import ClientLevelEvent, client_level_epsilon
from securediff.privacy.ledger import ForwardNoiseEvent, PrivacyLedger
from securediff.privacy.skellam_accounting import skellam_epsilon
from securediff.rng import RandomSource

DELTA = 1e-5


def _gaussian(z: float = 2.0, q: float = 0.5, steps: int = 10) -> ClientLevelEvent:
    return ClientLevelEvent(mechanism="gaussian", clip_norm=1.0, sample_rate=q, steps=steps,
                            noise_added_by="aggregator", noise_multiplier=z)


def test_gaussian_event_is_the_subsampled_gaussian_with_the_client_as_unit():
    eps = client_level_epsilon([_gaussian()], delta=DELTA, accountant="pld")
    assert eps == pytest.approx(dpsgd_epsilon(noise_multiplier=2.0, sample_rate=0.5, steps=10, delta=DELTA))


def test_event_round_trips_through_the_ledger_and_merges_rounds():
    ledger = PrivacyLedger(client_id="c", budget_epsilon=100.0, delta=DELTA)
    ledger.charge(_gaussian(steps=4))
    ledger.charge(_gaussian(steps=6))
    assert ledger.events == (_gaussian(steps=10),)
    again = PrivacyLedger.from_json(ledger.to_json())
    assert again.events == ledger.events
    claim = ledger.summary()["artefacts"]["shared"]["client_level"]
    assert claim["unit"] == "client" and claim["relation"] == "add_remove"
    assert claim["epsilon"] <= client_level_epsilon([_gaussian()], delta=DELTA, accountant="pld") + 1e-9


def test_record_claim_keeps_the_tighter_view():
    # PFDM: the update is a post-processing of x~, so the forward noise alone still bounds a record.
    forward = ForwardNoiseEvent(sigma=20.0, clip_norm=10.0, t0=600, data_id="x")
    ledger = PrivacyLedger(client_id="c", budget_epsilon=100.0, delta=DELTA, events=[forward])
    before = ledger.epsilon("shared")
    ledger.charge(_gaussian())
    assert ledger.epsilon("shared") == pytest.approx(before)
    # fedavg: no record-level mechanism; a record moves its client's update within the clip.
    alone = PrivacyLedger(client_id="c", budget_epsilon=100.0, delta=DELTA)
    alone.charge(_gaussian())
    replaced = compose_epsilon([_gaussian().as_mechanism()], delta=DELTA, relation="replace_one")
    assert alone.epsilon("shared") == pytest.approx(replaced)
    assert replaced > client_level_epsilon([_gaussian()], delta=DELTA, accountant="pld")


@pytest.mark.parametrize("bad", [
    dict(mechanism="laplace"), dict(noise_multiplier=0.0), dict(sample_rate=1.5),
    dict(noise_added_by="nobody"), dict(steps=0),
])
def test_event_refuses_bad_fields(bad):
    fields = dict(mechanism="gaussian", clip_norm=1.0, sample_rate=0.5, steps=3, noise_added_by="aggregator",
                  noise_multiplier=1.0) | bad
    with pytest.raises(ConfigError):
        ClientLevelEvent(**fields)


def test_gaussian_plan_meets_the_client_epsilon_over_the_planned_rounds():
    plan = plan_client_level(mechanism="gaussian", clip=1.0, target_epsilon=4.0, noise_multiplier=None,
                             sample_rate=0.3, num_clients=20, rounds=25, delta=DELTA, dim=100)
    eps = client_level_epsilon([plan.event(rounds=25)], delta=DELTA, accountant="pld")
    assert 3.99 * 0.99 <= eps <= 4.0


def test_skellam_plan_is_accounted_as_the_distributed_skellam_mechanism():
    plan = plan_client_level(mechanism="skellam", clip=1.0, target_epsilon=4.0, noise_multiplier=None,
                             sample_rate=1.0, num_clients=6, rounds=5, delta=DELTA, dim=50, min_survivors=5)
    assert plan.protocol_params()["min_contributors"] == 5
    event = plan.event(rounds=5)
    sk = plan.skellam
    expected = skellam_epsilon(l1=sk.l1_sensitivity, l2=sk.l2_sensitivity, variance=sk.noise_variance,
                               sample_rate=1.0, steps=5, delta=DELTA)
    assert client_level_epsilon([event], delta=DELTA, accountant="rdp") == pytest.approx(expected)
    assert expected <= 4.0
    # more contributors than the floor: more noise reached the sum, a smaller epsilon
    assert client_level_epsilon([plan.event(rounds=5, contributors=6)], delta=DELTA, accountant="rdp") < expected


def test_round_clips_sends_weight_one_and_steps_by_the_expected_count():
    plan = plan_client_level(mechanism="gaussian", clip=1.0, target_epsilon=None, noise_multiplier=0.5,
                             sample_rate=0.5, num_clients=4, rounds=1, delta=DELTA, dim=3)
    agg = ClientLevelRound(plan)
    big = np.array([3.0, 4.0, 0.0])
    sent = agg.client_input(big, noise_source=None)
    assert sent.weight == 1.0 and np.linalg.norm(sent.vector) == pytest.approx(1.0, rel=1e-6)
    assert np.allclose(clip_update(np.array([0.1, 0.0, 0.0]), 1.0), [0.1, 0.0, 0.0])
    source = RandomSource.insecure_from_seed(3)
    noisy = agg.noisy_sum(np.zeros(200_00 // 100), contributors=2, noise_source=source)
    assert np.std(noisy) == pytest.approx(0.5, rel=0.1)
    assert np.allclose(agg.step(np.full(3, 2.0)), 1.0)  # over q n = 2, not the realised count


def test_skellam_round_decodes_the_sum_of_shares():
    plan = plan_client_level(mechanism="skellam", clip=1.0, target_epsilon=None, noise_multiplier=0.05,
                             sample_rate=1.0, num_clients=3, rounds=1, delta=DELTA, dim=64, min_survivors=3)
    agg = ClientLevelRound(plan)
    rng = np.random.default_rng(0)
    updates = [rng.standard_normal(64) * 0.1 for _ in range(3)]
    shares = [agg.client_input(u, noise_source=RandomSource.insecure_from_seed(i)).vector
              for i, u in enumerate(updates)]
    noisy = agg.noisy_sum(np.sum(shares, axis=0), contributors=3, noise_source=None)
    assert np.abs(noisy - np.sum(updates, axis=0)).max() < 0.2


@pytest.mark.parametrize("section, message", [
    (dict(privacy=dict(client_level=True, client_clip=-1.0)), "privacy.client_clip"),
    (dict(privacy=dict(client_level=True, client_noise="laplace")), "privacy.client_noise"),
    (dict(privacy=dict(client_level=True, client_noise="skellam", accountant="rdp")), "federation.protocol"),
    (dict(privacy=dict(client_level=True), federation=dict(strategy="local")), "privacy.client_level"),
    (dict(privacy=dict(client_level=True), federation=dict(update_clip=1.0)), "federation.update_clip"),
])
def test_config_refuses_a_bad_client_level_setting_in_one_line(section, message):
    with pytest.raises(ConfigError) as err:
        Config().replace(**section).validate()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_calibrated_noise_is_finite_and_positive():
    plan = plan_client_level(mechanism="gaussian", clip=2.0, target_epsilon=1.0, noise_multiplier=None,
                             sample_rate=1.0, num_clients=5, rounds=3, delta=DELTA, dim=10, accountant="exact")
    assert math.isfinite(plan.noise_multiplier) and plan.noise_multiplier > 0


def test_split_shows_a_client_level_event_on_its_own():
    from securediff.privacy.adaptive import mechanism_split

    [row] = mechanism_split([_gaussian()], delta=DELTA, accountant="pld")
    assert row["mechanism"] == "client_level (per client, gaussian)" and row["steps"] == 10
    assert row["epsilon"] == pytest.approx(client_level_epsilon([_gaussian()], delta=DELTA, accountant="pld"))
