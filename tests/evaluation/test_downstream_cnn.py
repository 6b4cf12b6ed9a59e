"""The downstream CNN: it learns what is there to learn, says nothing where there
is nothing, and is a function of its training set and the generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from securediff.errors import DataError
from securediff.evaluation.downstream_cnn import train_downstream_cnn
from securediff.evaluation.metrics import downstream_cnn_metrics


def _bars(n_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 8x8 images, separable only by where the ink is: a bright row
    (class 0), a bright column (class 1) or a bright diagonal (class 2), at a random
    position, over noise. Every class has the same mean intensity."""
    xs, ys = [], []
    for label in range(3):
        for _ in range(n_per_class):
            img = rng.normal(-0.8, 0.1, size=(8, 8))
            k = int(rng.integers(0, 8))
            if label == 0:
                img[k, :] = 0.9
            elif label == 1:
                img[:, k] = 0.9
            else:
                img[np.arange(8), (np.arange(8) + k) % 8] = 0.9
            xs.append(img)
            ys.append(label)
    return np.asarray(xs, dtype=np.float32)[:, None], np.asarray(ys, dtype=np.int64)


def test_learns_a_separable_set_from_synthetic_samples_only():
    rng = np.random.default_rng(0)
    train_x, train_y = _bars(30, rng)
    test_x, test_y = _bars(50, rng)
    m = downstream_cnn_metrics(train_x, train_y, test_x, test_y, num_classes=4,
                               generator=torch.Generator().manual_seed(0))
    assert m.accuracy > 0.95
    # Shuffled labels leave nothing to learn: chance (1/3) on 150 test images.
    shuffled = rng.permutation(train_y)
    chance = downstream_cnn_metrics(train_x, shuffled, test_x, test_y, num_classes=4,
                                    generator=torch.Generator().manual_seed(0))
    assert chance.accuracy < 0.6


def test_deterministic_given_the_generator():
    x, y = _bars(10, np.random.default_rng(1))
    test_x, _ = _bars(20, np.random.default_rng(2))

    def logits(seed: int) -> torch.Tensor:
        clf = train_downstream_cnn(x, y, num_classes=3, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return clf.net(torch.as_tensor(test_x))

    assert torch.equal(logits(5), logits(5))
    assert not torch.equal(logits(5), logits(6))


def test_one_class_predicts_it_and_bad_input_is_refused():
    x, y = _bars(5, np.random.default_rng(3))
    one = downstream_cnn_metrics(x[y == 1], y[y == 1], x, y, num_classes=3,
                                 generator=torch.Generator().manual_seed(0))
    assert one.accuracy == pytest.approx(1 / 3) and one.per_class_recall[1] == 1.0
    with pytest.raises(DataError):
        train_downstream_cnn(x[:, :, :1], y, num_classes=3, generator=torch.Generator())
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError):
        train_downstream_cnn(bad, y, num_classes=3, generator=torch.Generator())
    with pytest.raises(DataError):
        downstream_cnn_metrics(x, y + 3, x, y, num_classes=3, generator=torch.Generator())
