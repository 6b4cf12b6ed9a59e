"""The one-shot client-level audit through secagg, at a size that runs in seconds.

At 40 inserted canaries the estimate's sampling error is about 10% of mu; the
20% criterion at 200 canaries is measured by benchmarks/client_level_audit.py
(docs/audits.md). Seeds are pinned, so these checks are deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from audits.client_level import estimate_epsilon, least_squares_clients, run_canary_audit
from securediff.federation.client_level import ClientLevelPlan, plan_client_level
from securediff.privacy.accountants import gaussian_epsilon
from securediff.rng import RandomSource

REAL, CANARIES, DIM, ROUNDS, DELTA = 5, 40, 2000, 3, 1e-5


def _audit(plan, seed=0, statistic="sum"):
    g = np.random.default_rng(seed)
    real = least_squares_clients(clients=REAL, dim=DIM, records=20, local_steps=3, lr=0.5, generator=g)
    return run_canary_audit(plan=plan, real_updates=real, initial=np.zeros(DIM), canaries_in=CANARIES,
                            canaries_out=400, rounds=ROUNDS, delta=DELTA, generator=g,
                            source=RandomSource.insecure_from_seed(seed), protocol="secagg",
                            statistic=statistic)


@pytest.fixture(scope="module")
def noised():
    plan = plan_client_level(mechanism="gaussian", clip=1.0, target_epsilon=6.0, noise_multiplier=None,
                             sample_rate=1.0, num_clients=REAL + CANARIES, rounds=ROUNDS, delta=DELTA, dim=DIM)
    return _audit(plan)


def test_estimate_is_near_the_accountants_claim_through_secagg(noised):
    assert noised.claimed == pytest.approx(6.0, rel=0.01)
    assert noised.protocol == "secagg" and noised.canaries_in == CANARIES and noised.real_clients == REAL
    assert abs(noised.estimate / noised.claimed - 1.0) < 0.3
    assert "not a lower bound" in noised.kind


def test_with_the_noise_off_the_estimate_exceeds_three_times_the_claim(noised):
    off = _audit(ClientLevelPlan("gaussian", 1.0, 0.0, 1.0, REAL + CANARIES, ROUNDS))
    assert off.claimed is None
    assert off.estimate > 3.0 * noised.claimed


def test_estimator_recovers_a_known_gaussian_shift():
    g = np.random.default_rng(1)
    eps, mu, *_ = estimate_epsilon(2.0 + g.standard_normal(20_000), g.standard_normal(20_000), delta=DELTA)
    assert mu == pytest.approx(2.0, abs=0.05)
    assert eps == pytest.approx(gaussian_epsilon(mu=2.0, delta=DELTA), rel=0.05)


def test_refuses_client_sampling():
    plan = ClientLevelPlan("gaussian", 1.0, 1.0, 0.5, REAL + CANARIES, ROUNDS)
    with pytest.raises(ValueError, match="every client in every round"):
        _audit(plan)
