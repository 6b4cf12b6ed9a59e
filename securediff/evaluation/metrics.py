"""Per-client metrics of synthetic data: downstream accuracy, class-wise bias, FID.

Downstream accuracy asks whether a client's synthetic samples can stand in
for its data: a classifier is trained on them alone and scored on the real
test split. Two classifiers are reported: a multinomial logistic regression
(`accuracy`), which rewards class means and covariances, and a small CNN
(`accuracy_cnn`, securediff.evaluation.downstream_cnn), which also rewards
local shape. The logistic regression's per-class recall shows who pays for the
client's label skew; bias_std (population standard deviation) and bias_gap
(max - min) summarise it over the classes present in the test split.
FID is reported on all classes, the client's majority classes and its
minority classes (< 5% of its training data, chosen by the caller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from securediff.errors import ConfigError, DataError
from securediff.evaluation.downstream_cnn import train_downstream_cnn
from securediff.evaluation.evaluator import Evaluator
from securediff.evaluation.fid import fid_from_features


class Classifier(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray: ...


class _Flattening:
    """Flattens (N, ...) inputs before the wrapped model sees them."""

    def __init__(self, model: Classifier) -> None:
        self.model = model

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(_flatten(x)), dtype=np.int64)


@dataclass(frozen=True)
class _Constant:
    """What a classifier trained on a single class can only say."""

    label: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(np.asarray(x).shape[0], self.label, dtype=np.int64)


def _flatten(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(a.shape[0], math.prod(a.shape[1:]))


def _labels(y: np.ndarray, n: int, num_classes: int, name: str) -> np.ndarray:
    labels = np.asarray(y).reshape(-1)
    if labels.shape[0] != n:
        raise DataError(f"{name}: {labels.shape[0]} labels for {n} samples")
    if labels.size and (
        not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
        or labels.max() >= num_classes
    ):
        raise DataError(f"{name}: labels must be integers in [0, {num_classes})")
    return labels.astype(np.int64)


def downstream_classifier(synth_x: np.ndarray, synth_y: np.ndarray) -> Classifier:
    """Multinomial logistic regression on flattened synthetic samples.

    A synthetic set with one class yields a classifier that always predicts
    that class (scikit-learn refuses to fit one class).
    """
    x = _flatten(synth_x)
    y = np.asarray(synth_y).reshape(-1).astype(np.int64)
    if x.shape[0] == 0 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"need a non-empty synthetic set with one label each, got {x.shape[0]} / {y.shape[0]}"
        )
    if not np.isfinite(x).all():
        raise DataError("synthetic samples contain non-finite values")
    classes = np.unique(y)
    if classes.size == 1:
        return _Constant(int(classes[0]))
    return _Flattening(LogisticRegression(max_iter=1000).fit(x, y))


@dataclass(frozen=True)
class DownstreamMetrics:
    accuracy: float
    per_class_recall: tuple[float, ...]  # nan for classes absent from the test split
    bias_std: float
    bias_gap: float


def recall_metrics(
    predictions: np.ndarray, test_y: np.ndarray, *, num_classes: int
) -> DownstreamMetrics:
    """Accuracy, per-class recall and its spread from predictions on the test split."""
    pred = np.asarray(predictions).reshape(-1)
    y = _labels(test_y, pred.shape[0], num_classes, "test_y")
    if y.size == 0:
        raise DataError("the test split is empty")
    recall = tuple(
        float(np.mean(pred[y == c] == c)) if np.any(y == c) else math.nan
        for c in range(num_classes)
    )
    present = np.array([r for r in recall if not math.isnan(r)])
    return DownstreamMetrics(
        accuracy=float(np.mean(pred == y)),
        per_class_recall=recall,
        bias_std=float(np.std(present)),
        bias_gap=float(present.max() - present.min()),
    )


def downstream_metrics(
    synth_x: np.ndarray,
    synth_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
) -> DownstreamMetrics:
    """Train on synthetic samples only, score on the real test split."""
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    _labels(synth_y, np.asarray(synth_x).shape[0], num_classes, "synth_y")
    if np.asarray(test_x).shape[0] == 0:
        raise DataError("the test split is empty")
    clf = downstream_classifier(synth_x, synth_y)
    return recall_metrics(clf.predict(test_x), test_y, num_classes=num_classes)


def downstream_cnn_metrics(
    synth_x: np.ndarray,
    synth_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    generator: torch.Generator,
) -> DownstreamMetrics:
    """As downstream_metrics, with the fixed small CNN trained from `generator`
    in place of the logistic regression."""
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    sy = _labels(synth_y, np.asarray(synth_x).shape[0], num_classes, "synth_y")
    if sy.size == 0:
        raise DataError("need a non-empty synthetic set")
    if np.asarray(test_x).shape[0] == 0:
        raise DataError("the test split is empty")
    classes = np.unique(sy)
    clf: Classifier = (_Constant(int(classes[0])) if classes.size == 1 else
                       train_downstream_cnn(synth_x, sy, num_classes=num_classes, generator=generator))
    return recall_metrics(clf.predict(test_x), test_y, num_classes=num_classes)


@dataclass(frozen=True)
class ClientMetrics:
    client_id: str
    accuracy: float  # the logistic regression's
    accuracy_cnn: float  # the small CNN's
    bias_std: float
    bias_gap: float
    per_class_recall: tuple[float, ...]
    fid_all: float
    fid_majority: float
    fid_minority: float  # nan when the client has no minority classes
    minority_classes: tuple[int, ...]
    num_synthetic: int
    # Small sets bias FID upward; the per-class counts say how many samples each FID saw.
    synthetic_class_counts: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-safe: nan becomes None."""
        return {
            "client_id": self.client_id,
            "accuracy": _json_float(self.accuracy),
            "accuracy_cnn": _json_float(self.accuracy_cnn),
            "bias_std": _json_float(self.bias_std),
            "bias_gap": _json_float(self.bias_gap),
            "per_class_recall": [_json_float(r) for r in self.per_class_recall],
            "fid_all": _json_float(self.fid_all),
            "fid_majority": _json_float(self.fid_majority),
            "fid_minority": _json_float(self.fid_minority),
            "minority_classes": list(self.minority_classes),
            "num_synthetic": self.num_synthetic,
            "synthetic_class_counts": list(self.synthetic_class_counts),
        }


def _json_float(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def _minority(
    classes: tuple[int, ...] | list[int] | np.ndarray, num_classes: int
) -> tuple[int, ...]:
    ids = tuple(int(c) for c in classes)
    if len(set(ids)) != len(ids) or any(not 0 <= c < num_classes for c in ids):
        raise ConfigError(f"minority_classes must be distinct ids in [0, {num_classes}), got {ids}")
    return tuple(sorted(ids))


def evaluate_client(
    *,
    client_id: str,
    evaluator: Evaluator,
    synth_x: np.ndarray,
    synth_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    minority_classes: tuple[int, ...] | list[int],
    num_classes: int,
    cnn_generator: torch.Generator,
) -> ClientMetrics:
    """All metrics of one client's synthetic samples against the real test split.

    `cnn_generator` initialises and shuffles the downstream CNN.

    FID majority compares synthetic and real test samples of the classes not
    in `minority_classes`; FID minority those of `minority_classes`. Either is
    nan when a side has fewer than 2 samples.
    """
    if num_classes != evaluator.num_classes:
        raise ConfigError(
            f"num_classes {num_classes} differs from the evaluator's {evaluator.num_classes}"
        )
    minority = _minority(minority_classes, num_classes)
    sx, tx = np.asarray(synth_x, np.float32), np.asarray(test_x, np.float32)
    sy = _labels(synth_y, sx.shape[0], num_classes, "synth_y")
    ty = _labels(test_y, tx.shape[0], num_classes, "test_y")
    down = downstream_metrics(sx, sy, tx, ty, num_classes=num_classes)
    cnn = downstream_cnn_metrics(sx, sy, tx, ty, num_classes=num_classes, generator=cnn_generator)

    s_feats, t_feats = evaluator.features(sx), evaluator.features(tx)
    s_min, t_min = np.isin(sy, minority), np.isin(ty, minority)
    fid_minority = fid_from_features(s_feats[s_min], t_feats[t_min]) if minority else math.nan
    return ClientMetrics(
        client_id=client_id,
        accuracy=down.accuracy,
        accuracy_cnn=cnn.accuracy,
        bias_std=down.bias_std,
        bias_gap=down.bias_gap,
        per_class_recall=down.per_class_recall,
        fid_all=fid_from_features(s_feats, t_feats),
        fid_majority=fid_from_features(s_feats[~s_min], t_feats[~t_min]),
        fid_minority=fid_minority,
        minority_classes=minority,
        num_synthetic=int(sx.shape[0]),
        synthetic_class_counts=tuple(int(n) for n in np.bincount(sy, minlength=num_classes)),
    )


_SUMMARY_FIELDS = ("accuracy", "accuracy_cnn", "bias_std", "bias_gap", "fid_all", "fid_majority",
                   "fid_minority")


def summarize(metrics: list[ClientMetrics]) -> dict[str, object]:
    """Means over clients, ignoring nan; `num_defined` says how many clients each mean covers."""
    mean: dict[str, float | None] = {}
    defined: dict[str, int] = {}
    for field in _SUMMARY_FIELDS:
        values = [getattr(m, field) for m in metrics if math.isfinite(getattr(m, field))]
        defined[field] = len(values)
        mean[field] = float(np.mean(values)) if values else None
    lowest = {f"min_{field}": min((getattr(m, field) for m in metrics if math.isfinite(getattr(m, field))),
                                  default=None) for field in ("accuracy", "accuracy_cnn")}
    return {"num_clients": len(metrics), "mean": mean, "num_defined": defined, **lowest}
