"""The statistics release round: Skellam shares through secagg, or a bare sum on
plain with the aggregator's Gaussian; ledgers charged before anything leaves;
the released vector is the exact sum plus noise of the planned size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from protocols import Identities, make_protocol
from protocols.errors import ProtocolAbort
from securediff.errors import ConfigError
from securediff.federation.clients import Client
from securediff.federation.stats_round import client_contribution, protocol_params, release_stats
from securediff.privacy.accountants import compose
from securediff.privacy.ledger import PrivacyLedger
from securediff.privacy.stats_release import (
    StatsLayout,
    identity,
    plan_gaussian_stats,
    plan_skellam_stats,
)
from securediff.rng import RandomSource

CLASSES, SIDE, RECORDS = 3, 4, 40  # 1x4x4 images: d = 16, a full 16x16 moment


def _clients(n: int, seed: int = 0) -> list[Client]:
    rng = np.random.default_rng(seed)  # test data only
    out = []
    for i in range(n):
        x = torch.from_numpy(rng.uniform(-1, 1, (RECORDS, 1, SIDE, SIDE))).float()
        y = torch.from_numpy(rng.integers(0, CLASSES, RECORDS))
        out.append(Client(client_id=f"c{i}", index=i, x=x, y=y,
                          ledger=PrivacyLedger(client_id=f"c{i}", budget_epsilon=20.0, delta=1e-5,
                                              accountant="rdp"),
                          source=RandomSource.insecure_from_seed(100 + i)))
    return out


def _layout() -> StatsLayout:
    return StatsLayout(num_classes=CLASSES, dim=SIDE * SIDE, clip_norm=2.0)


def _features(images: np.ndarray) -> np.ndarray:
    return identity(images)


def _run(clients, plan, protocol_name, *, dropouts=None, order=None):
    ids = Identities.generate([c.client_id for c in clients])
    protocol = make_protocol(protocol_name, **protocol_params(plan)).bind(ids)

    def features(images):
        if order is not None:
            order.append("features")
        return _features(images)

    def charged():
        if order is not None:
            order.append("charged")

    return release_stats(clients, plan=plan, feature_map=features, protocol=protocol, identities=ids,
                         transcript=None, round_index=0,
                         aggregator_source=RandomSource.insecure_from_seed(9), charged=charged,
                         dropouts=dropouts)


def test_secagg_release_is_the_exact_sum_plus_the_planned_skellam_noise():
    clients = _clients(5)
    plan = plan_skellam_stats(_layout(), target_epsilon=8.0, delta=1e-5, relation="replace_one",
                              min_survivors=4, max_clients=5, total_records=5 * RECORDS)
    order: list[str] = []
    out = _run(clients, plan, "secagg", order=order)
    assert order[0] == "charged" and order.count("charged") == 1  # write-ahead
    exact = sum(client_contribution(c, _features, plan) for c in clients)
    noise = out.noisy_vector - exact
    expected_std = math.sqrt(5 * plan.skellam.share_variance) / plan.skellam.scale
    assert noise.size == plan.layout.size
    assert 0.75 * expected_std < noise.std() < 1.25 * expected_std
    assert out.contributors == tuple(c.client_id for c in clients)
    assert out.stats.counts.sum() == 5 * RECORDS
    for c in clients:
        (event,) = c.ledger.events
        assert event.kind == "skellam_release"
        assert event.noise_variance == pytest.approx(5 * plan.skellam.share_variance)
        eps = compose(list(c.ledger.events), delta=1e-5, accountant="rdp", relation="replace_one").epsilon
        assert eps <= 8.0 + 1e-9


def test_a_dropout_leaves_its_records_out_and_the_floor_charge_in_place():
    clients = _clients(5, seed=1)
    plan = plan_skellam_stats(_layout(), target_epsilon=8.0, delta=1e-5, relation="replace_one",
                              min_survivors=4, max_clients=5, total_records=5 * RECORDS)
    out = _run(clients, plan, "secagg", dropouts={"c2": "MaskedInput"})
    assert out.contributors == ("c0", "c1", "c3", "c4")
    assert out.stats.counts.sum() == 4 * RECORDS
    assert all(c.ledger.events[0].noise_variance == pytest.approx(4 * plan.skellam.share_variance)
               for c in clients)
    # Two gone: below the floor of 4 shares, secagg refuses and the floor charge stays.
    clients = _clients(5, seed=2)
    with pytest.raises(ProtocolAbort):
        _run(clients, plan, "secagg", dropouts={"c1": "MaskedInput", "c2": "MaskedInput"})
    floor = plan.event(survivors=4)
    assert all(c.ledger.events == (floor,) for c in clients)


def test_plain_release_adds_the_planned_gaussian_noise_to_the_sum():
    clients = _clients(4, seed=3)
    plan = plan_gaussian_stats(_layout(), target_epsilon=4.0, delta=1e-5, relation="replace_one")
    out = _run(clients, plan, "plain")
    exact = sum(client_contribution(c, _features, plan) for c in clients)
    noise = out.noisy_vector - exact
    assert 0.75 * plan.noise_std < noise.std() < 1.25 * plan.noise_std
    for c in clients:
        (event,) = c.ledger.events
        assert event.kind == "gaussian_release"
        # The plan was calibrated by the exact Gaussian accountant, which the ledger recomputes.
        eps = compose(list(c.ledger.events), delta=1e-5, accountant="exact",
                      relation="replace_one").epsilon
        assert eps <= 4.0 + 1e-6


def test_the_simulated_tee_release_adds_the_planned_gaussian_noise_to_the_exact_sum():
    # Central noise inside the (simulated) enclave: the aggregate the enclave releases
    # is the exact sum, and the noise on top of it is the plan's.
    clients = _clients(4, seed=5)
    plan = plan_gaussian_stats(_layout(), target_epsilon=4.0, delta=1e-5, relation="replace_one")
    out = _run(clients, plan, "tee")
    exact = sum(client_contribution(c, _features, plan) for c in clients)
    noise = out.noisy_vector - exact
    assert 0.75 * plan.noise_std < noise.std() < 1.25 * plan.noise_std and abs(noise.mean()) < 0.2 * plan.noise_std
    assert set(out.contributors) == {c.client_id for c in clients}
    for c in clients:
        (event,) = c.ledger.events
        assert event.kind == "gaussian_release" and event.relation == "replace_one"


def test_the_plan_must_fit_the_protocol():
    clients = _clients(4, seed=4)
    gaussian = plan_gaussian_stats(_layout(), target_epsilon=4.0, delta=1e-5, relation="add_remove")
    with pytest.raises(ConfigError, match="Gaussian"):
        _run(clients, gaussian, "secagg")
    assert all(not c.ledger.events for c in clients)  # refused before any charge
