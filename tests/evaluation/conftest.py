"""Shared fixtures: the digits data split as the design fixes it, and one evaluator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from securediff.evaluation import Evaluator, train_evaluator


@dataclass(frozen=True)
class Digits:
    pool_x: np.ndarray
    pool_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@pytest.fixture(scope="session")
def digits() -> Digits:
    d = load_digits()
    x = (d.images / 8.0 - 1.0).astype(np.float32)[:, None]  # 0..16 -> [-1, 1]
    pool_x, test_x, pool_y, test_y = train_test_split(
        x, d.target, test_size=0.25, stratify=d.target, random_state=0
    )
    return Digits(pool_x, pool_y.astype(np.int64), test_x, test_y.astype(np.int64))


@pytest.fixture(scope="session")
def evaluator(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> Evaluator:
    return train_evaluator(
        digits.pool_x,
        digits.pool_y,
        num_classes=10,
        generator=torch.Generator().manual_seed(0),
        cache_dir=tmp_path_factory.mktemp("evaluator-cache"),
        cache_key="digits",
    )
