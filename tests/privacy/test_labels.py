"""Label release: k-ary randomized response rates, ledger charging, policy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from securediff.errors import BudgetExceededError, ConfigError
from securediff.privacy.labels import LabelPolicy, keep_probability, randomized_response
from securediff.privacy.ledger import PrivacyLedger, RandomizedResponseEvent
from securediff.rng import RandomSource


def ledger(budget: float = 10.0) -> PrivacyLedger:
    return PrivacyLedger(client_id="c", budget_epsilon=budget, delta=1e-5, accountant="rdp")


def test_keep_probability_formula() -> None:
    assert keep_probability(epsilon=1.0, num_classes=10) == pytest.approx(math.e / (math.e + 9))
    assert keep_probability(epsilon=50.0, num_classes=2) == pytest.approx(1.0)


@pytest.mark.parametrize(("epsilon", "k"), [(1.0, 10), (3.0, 4), (0.2, 2)])
def test_empirical_rates_match_randomized_response(epsilon: float, k: int) -> None:
    n = 120_000
    y = np.arange(n) % k
    out = randomized_response(
        y,
        epsilon=epsilon,
        num_classes=k,
        source=RandomSource.insecure_from_seed(1),
        ledger=ledger(),
    )
    assert out.shape == y.shape and out.min() >= 0 and out.max() < k
    p = keep_probability(epsilon=epsilon, num_classes=k)
    kept = float(np.mean(out == y))
    assert kept == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n))
    # a changed label is uniform over the other k-1 classes
    moved = out[(y == 0) & (out != 0)]
    counts = np.bincount(moved, minlength=k)[1:]
    expected = moved.size / (k - 1)
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))
    # likelihood ratio of reporting the truth vs. one given other label is e^eps
    other = float(np.mean(out[y == 1] == 0))
    assert math.log(float(np.mean(out[y == 0] == 0)) / other) == pytest.approx(epsilon, abs=0.1)


def test_charges_the_ledger_first() -> None:
    led = ledger()
    randomized_response(
        np.array([0, 1, 2]),
        epsilon=1.5,
        num_classes=3,
        source=RandomSource.insecure_from_seed(0),
        ledger=led,
    )
    assert led.events == (RandomizedResponseEvent(epsilon=1.5, num_classes=3),)
    assert led.epsilon("shared") == pytest.approx(1.5)

    tight = ledger(budget=1.0)
    src = RandomSource.insecure_from_seed(4)
    with pytest.raises(BudgetExceededError):
        randomized_response(np.array([0, 1]), epsilon=1.5, num_classes=3, source=src, ledger=tight)
    assert tight.events == ()
    assert np.array_equal(src.uniform(3), RandomSource.insecure_from_seed(4).uniform(3))


def test_bad_labels_are_refused_before_charging() -> None:
    led = ledger()
    src = RandomSource.insecure_from_seed(0)
    for bad in (np.array([0, 3]), np.array([-1]), np.array([0.5]), np.zeros((2, 2), dtype=int)):
        with pytest.raises(ConfigError):
            randomized_response(bad, epsilon=1.0, num_classes=3, source=src, ledger=led)
    with pytest.raises(ConfigError):
        randomized_response(np.array([0]), epsilon=0.0, num_classes=3, source=src, ledger=led)
    assert led.events == ()


def test_label_policy() -> None:
    public = LabelPolicy("public")
    assert "unprotected" in public.statement()
    led = ledger()
    y = np.array([0, 1, 2, 1])
    np.testing.assert_array_equal(
        public.apply(y, num_classes=3, source=RandomSource.insecure_from_seed(0), ledger=led), y
    )
    assert led.events == ()

    rr = LabelPolicy("randomized-response", epsilon=2.0)
    assert "epsilon=2" in rr.statement()
    out = rr.apply(y, num_classes=3, source=RandomSource.insecure_from_seed(0), ledger=led)
    assert out.shape == y.shape
    assert led.events == (RandomizedResponseEvent(epsilon=2.0, num_classes=3),)

    with pytest.raises(ConfigError):
        LabelPolicy("randomized-response")
    with pytest.raises(ConfigError):
        LabelPolicy("public", epsilon=1.0)
    with pytest.raises(ConfigError):
        LabelPolicy("hashed")  # type: ignore[arg-type]
