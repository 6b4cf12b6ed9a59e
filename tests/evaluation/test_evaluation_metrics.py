from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from securediff.errors import ConfigError, DataError
from securediff.evaluation import (
    ClientMetrics,
    downstream_classifier,
    downstream_metrics,
    evaluate_client,
    summarize,
)
from securediff.evaluation.metrics import recall_metrics


def test_classifier_trained_on_real_digits_is_accurate(digits):
    m = downstream_metrics(
        digits.pool_x, digits.pool_y, digits.test_x, digits.test_y, num_classes=10
    )
    assert m.accuracy > 0.9
    assert len(m.per_class_recall) == 10
    assert min(m.per_class_recall) > 0.7
    assert 0.0 <= m.bias_std < 0.1


def test_classifier_trained_on_noise_is_at_chance(digits):
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1, 1, size=digits.pool_x.shape).astype(np.float32)
    labels = rng.integers(0, 10, size=noise.shape[0])
    m = downstream_metrics(noise, labels, digits.test_x, digits.test_y, num_classes=10)
    # Chance is 0.1; 450 test samples give a standard error of about 0.014.
    assert 0.03 < m.accuracy < 0.2


def test_pinned_recall_and_bias():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 0, 2, 0])
    m = recall_metrics(pred, y, num_classes=4)
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.per_class_recall[:3] == (1.0, 0.5, 0.5)
    assert math.isnan(m.per_class_recall[3])  # class 3 absent from the test split
    # population std of (1, 1/2, 1/2) = sqrt(1/18)
    assert m.bias_std == pytest.approx(math.sqrt(1 / 18))
    assert m.bias_gap == pytest.approx(0.5)


def test_perfect_recall_has_no_bias(digits):
    m = recall_metrics(digits.test_y, digits.test_y, num_classes=10)
    assert m.accuracy == 1.0
    assert m.per_class_recall == (1.0,) * 10
    assert m.bias_std == 0.0
    assert m.bias_gap == 0.0


def test_single_class_synthetic_set_predicts_that_class(digits):
    x = digits.pool_x[digits.pool_y == 3]
    clf = downstream_classifier(x, np.full(x.shape[0], 3))
    assert np.all(clf.predict(digits.test_x) == 3)
    m = downstream_metrics(x, np.full(x.shape[0], 3), digits.test_x, digits.test_y, num_classes=10)
    assert m.accuracy == pytest.approx(np.mean(digits.test_y == 3))
    assert m.per_class_recall[3] == 1.0 and m.per_class_recall[0] == 0.0
    assert m.bias_gap == 1.0


def test_downstream_rejects_bad_inputs(digits):
    x, y = digits.pool_x[:20], digits.pool_y[:20]
    with pytest.raises(DataError):
        downstream_metrics(x[:0], y[:0], digits.test_x, digits.test_y, num_classes=10)
    with pytest.raises(DataError):
        downstream_metrics(x, y + 10, digits.test_x, digits.test_y, num_classes=10)
    with pytest.raises(DataError):
        downstream_metrics(x, y[:5], digits.test_x, digits.test_y, num_classes=10)
    with pytest.raises(DataError):
        downstream_metrics(x, y, digits.test_x, digits.test_y[:5], num_classes=10)
    with pytest.raises(ConfigError):
        downstream_metrics(x, y, digits.test_x, digits.test_y, num_classes=1)


def _client(digits, evaluator, synth_x, synth_y, minority):
    return evaluate_client(
        client_id=7,
        evaluator=evaluator,
        synth_x=synth_x,
        synth_y=synth_y,
        test_x=digits.test_x,
        test_y=digits.test_y,
        minority_classes=minority,
        num_classes=10,
        cnn_generator=torch.Generator().manual_seed(0),
    )


def test_evaluate_client_separates_majority_from_minority(digits, evaluator):
    minority = [3, 7]
    real = _client(digits, evaluator, digits.pool_x, digits.pool_y, minority)
    # Spoil only the minority classes of the synthetic set.
    rng = np.random.default_rng(1)
    spoilt_x = digits.pool_x.copy()
    is_min = np.isin(digits.pool_y, minority)
    spoilt_x[is_min] = rng.uniform(-1, 1, size=spoilt_x[is_min].shape).astype(np.float32)
    spoilt = _client(digits, evaluator, spoilt_x, digits.pool_y, minority)

    # Same majority samples; float32 kernels may round differently per batch.
    assert real.fid_majority == pytest.approx(spoilt.fid_majority, rel=1e-5)
    assert spoilt.fid_minority > 10 * real.fid_minority
    assert spoilt.fid_all > real.fid_all
    assert spoilt.per_class_recall[3] < real.per_class_recall[3]
    assert real.accuracy > 0.9 and real.accuracy_cnn > 0.9
    assert real.minority_classes == (3, 7)
    assert real.num_synthetic == digits.pool_x.shape[0]
    assert real.synthetic_class_counts == tuple(np.bincount(digits.pool_y, minlength=10))


def test_evaluate_client_without_minority_and_json(digits, evaluator):
    m = _client(digits, evaluator, digits.pool_x[:300], digits.pool_y[:300], [])
    assert math.isnan(m.fid_minority)
    assert m.fid_majority == pytest.approx(m.fid_all, rel=1e-12)
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert d["fid_minority"] is None
    assert d["accuracy_cnn"] == pytest.approx(m.accuracy_cnn) and 0.0 <= m.accuracy_cnn <= 1.0
    assert d["client_id"] == 7 and d["minority_classes"] == []
    assert len(d["per_class_recall"]) == 10


def test_evaluate_client_with_too_few_minority_samples(digits, evaluator):
    # One synthetic sample of the minority class: its FID is undefined, not an error.
    keep = np.concatenate(
        [np.flatnonzero(digits.pool_y != 5), np.flatnonzero(digits.pool_y == 5)[:1]]
    )
    m = _client(digits, evaluator, digits.pool_x[keep], digits.pool_y[keep], [5])
    assert math.isnan(m.fid_minority)
    assert math.isfinite(m.fid_majority)
    assert m.synthetic_class_counts[5] == 1


def test_evaluate_client_rejects_bad_minority(digits, evaluator):
    with pytest.raises(ConfigError):
        _client(digits, evaluator, digits.pool_x[:50], digits.pool_y[:50], [10])
    with pytest.raises(ConfigError):
        _client(digits, evaluator, digits.pool_x[:50], digits.pool_y[:50], [2, 2])


def _metrics(client_id: int, accuracy: float, fid_minority: float, accuracy_cnn: float = math.nan
             ) -> ClientMetrics:
    return ClientMetrics(
        client_id=client_id,
        accuracy=accuracy,
        accuracy_cnn=accuracy_cnn,
        bias_std=0.1,
        bias_gap=0.3,
        per_class_recall=(accuracy, math.nan),
        fid_all=2.0 * client_id,
        fid_majority=1.0,
        fid_minority=fid_minority,
        minority_classes=(1,) if math.isfinite(fid_minority) else (),
        num_synthetic=100,
        synthetic_class_counts=(60, 40),
    )


def test_summarize_is_nan_aware():
    s = summarize([_metrics(1, 0.8, math.nan, 0.9), _metrics(2, 0.6, 4.0, 0.5), _metrics(3, 0.7, 8.0)])
    assert s["num_clients"] == 3
    assert s["mean"]["accuracy"] == pytest.approx(0.7)
    assert s["mean"]["accuracy_cnn"] == pytest.approx(0.7) and s["num_defined"]["accuracy_cnn"] == 2
    assert s["min_accuracy_cnn"] == pytest.approx(0.5)
    assert s["mean"]["fid_all"] == pytest.approx(4.0)
    assert s["mean"]["fid_minority"] == pytest.approx(6.0)
    assert s["num_defined"]["fid_minority"] == 2
    assert s["min_accuracy"] == pytest.approx(0.6)
    json.dumps(s, allow_nan=False)


def test_summarize_all_nan_and_empty():
    s = summarize([_metrics(1, 0.8, math.nan)])
    assert s["mean"]["fid_minority"] is None and s["num_defined"]["fid_minority"] == 0
    empty = summarize([])
    assert empty["num_clients"] == 0 and empty["mean"]["accuracy"] is None
    json.dumps(empty, allow_nan=False)
