"""Evaluation of synthetic data: evaluator network, FID, downstream metrics."""

from securediff.evaluation.evaluator import Evaluator, train_evaluator
from securediff.evaluation.fid import fid_from_features, frechet_distance
from securediff.evaluation.metrics import (
    ClientMetrics,
    DownstreamMetrics,
    downstream_classifier,
    downstream_metrics,
    evaluate_client,
    summarize,
)

__all__ = [
    "ClientMetrics",
    "DownstreamMetrics",
    "Evaluator",
    "downstream_classifier",
    "downstream_metrics",
    "evaluate_client",
    "fid_from_features",
    "frechet_distance",
    "summarize",
    "train_evaluator",
]
