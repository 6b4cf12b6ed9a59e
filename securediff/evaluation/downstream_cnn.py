"""The second downstream classifier: a small CNN trained on one client's
synthetic samples only and scored on the real test split.

A linear classifier rewards synthetic sets that get class means and
covariances right; a CNN also rewards local shape. Both are reported.

Every setting below (architecture, EPOCHS, BATCH_SIZE, LR, WEIGHT_DECAY) was
fixed in code before any run and never tuned on private data or on any run's
results: two 3x3 conv layers of 16 and 32 channels with ReLU, a 2x2 max-pool
after the first, a 2x2 adaptive average pool, and a linear head; Adam for
EPOCHS passes over the synthetic set in shuffled batches of BATCH_SIZE. The
weights are initialised and the batches shuffled from the injected generator
alone, on one CPU thread with deterministic kernels, so the classifier is a
function of the synthetic set and the generator's state.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from securediff.errors import DataError
from securediff.evaluation.evaluator import fit_classifier, training_settings
from securediff.models.init import build

ARCHITECTURE = "securediff-downstream-cnn/v1"
EPOCHS = 20
BATCH_SIZE = 32
LR = 3e-3
WEIGHT_DECAY = 1e-4
_WIDTHS = (16, 32)


class _DownstreamNet(nn.Module):
    def __init__(self, *, channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, _WIDTHS[0], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(_WIDTHS[0], _WIDTHS[1], 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(_WIDTHS[1] * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


class DownstreamCNN:
    """A trained downstream CNN; `predict` gives (N,) int64 class ids."""

    def __init__(self, net: _DownstreamNet, input_shape: tuple[int, int, int]) -> None:
        self.net = net
        self.input_shape = input_shape

    def predict(self, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
        images = torch.as_tensor(np.asarray(x, dtype=np.float32))
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise DataError(f"expected images of shape (N, {', '.join(map(str, self.input_shape))}), "
                            f"got {tuple(images.shape)}")
        out = [np.zeros(0, dtype=np.int64)]
        self.net.eval()
        with torch.no_grad(), training_settings(1):
            for start in range(0, images.shape[0], batch_size):
                out.append(self.net(images[start:start + batch_size]).argmax(dim=1).numpy().astype(np.int64))
        return np.concatenate(out)


def train_downstream_cnn(synth_x: np.ndarray, synth_y: np.ndarray, *, num_classes: int,
                         generator: torch.Generator) -> DownstreamCNN:
    """Fit the fixed CNN on (N, C, H, W) synthetic images (H, W >= 2) and their labels.

    The caller checks the labels and handles a one-class set (nothing to learn).
    """
    x = torch.as_tensor(np.asarray(synth_x, dtype=np.float32))
    y = torch.as_tensor(np.asarray(synth_y).reshape(-1).astype(np.int64))
    if x.ndim != 4 or x.shape[2] < 2 or x.shape[3] < 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DataError(f"need (N, C, H, W) images with H, W >= 2 and one label each, "
                        f"got {tuple(x.shape)} and {tuple(y.shape)}")
    if not torch.isfinite(x).all():
        raise DataError("synthetic samples contain non-finite values")
    channels = int(x.shape[1])
    net = build(lambda: _DownstreamNet(channels=channels, num_classes=num_classes), generator=generator)
    opt = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    fit_classifier(net, opt, x, y, epochs=EPOCHS, batch_size=BATCH_SIZE, generator=generator,
                   num_threads=1)
    return DownstreamCNN(net, (channels, int(x.shape[2]), int(x.shape[3])))
