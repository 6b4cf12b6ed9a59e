"""The evaluator network: a small CNN whose 64-d features feed FID.

It is trained on the non-test pool of the real data (never on the test split,
never on synthetic samples) and is never released with the models: it saw
raw records without any DP, so it stays with whoever runs the evaluation.

Its weights are cached as safetensors with a JSON sidecar that pins the
architecture, the input shape, a digest of the training data and the SHA-256
of the weights file. A cache that fails any check is refused, not retrained
over: a silently replaced evaluator would change every FID of a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from securediff.errors import CheckpointError, ConfigError, DataError
from securediff.models.init import build

ARCHITECTURE = "securediff-evaluator-cnn/v1"
FEATURE_DIM = 64
_WIDTHS = (32, 64, 64)
_GROUPS = 8
_CACHE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class _EvaluatorNet(nn.Module):
    """Conv-GroupNorm-SiLU blocks (the middle one halves H and W), global
    average pool, a 64-d feature layer and a linear head. Any H, W >= 8."""

    def __init__(self, *, channels: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for i, width in enumerate(_WIDTHS):
            stride = 2 if i == 1 else 1
            layers += [
                nn.Conv2d(c_in, width, 3, stride=stride, padding=1),
                nn.GroupNorm(_GROUPS, width),
                nn.SiLU(),
            ]
            c_in = width
        self.body = nn.Sequential(*layers)
        self.feature = nn.Linear(c_in, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.body(x).mean(dim=(2, 3))
        return nn.functional.silu(self.feature(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _build(*, channels: int, num_classes: int, generator: torch.Generator | None) -> _EvaluatorNet:
    # Nothing is drawn from the global RNG: see securediff.models.init.
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return build(lambda: _EvaluatorNet(channels=channels, num_classes=num_classes), generator=generator)


@dataclass(frozen=True)
class Evaluator:
    """A trained evaluator. Not a release artefact: it saw raw training records."""

    net: nn.Module
    num_classes: int
    input_shape: tuple[int, int, int]

    def _batches(
        self, images: np.ndarray | torch.Tensor, batch_size: int
    ) -> Iterator[torch.Tensor]:
        x = torch.as_tensor(images, dtype=torch.float32).detach().cpu()
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"evaluator expects images of shape (N, {', '.join(map(str, self.input_shape))}),"
                f" got {tuple(x.shape)}"
            )
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size]

    def features(self, images: np.ndarray | torch.Tensor, *, batch_size: int = 512) -> np.ndarray:
        """(N, 64) float64 features of the feature layer (the FID embedding)."""
        out = [np.zeros((0, FEATURE_DIM))]
        with _eval_mode(self.net), torch.no_grad():
            for xb in self._batches(images, batch_size):
                out.append(self.net.embed(xb).double().numpy())
        return np.concatenate(out)

    def predict(self, images: np.ndarray | torch.Tensor, *, batch_size: int = 512) -> np.ndarray:
        """(N,) int64 predicted class ids."""
        out = [np.zeros(0, dtype=np.int64)]
        with _eval_mode(self.net), torch.no_grad():
            for xb in self._batches(images, batch_size):
                out.append(self.net(xb).argmax(dim=1).numpy().astype(np.int64))
        return np.concatenate(out)

    def accuracy(
        self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
    ) -> float:
        y = np.asarray(labels).reshape(-1)
        pred = self.predict(images)
        if pred.shape[0] != y.shape[0] or y.shape[0] == 0:
            raise DataError(
                f"need as many labels as images (> 0), got {y.shape[0]} and {pred.shape[0]}"
            )
        return float(np.mean(pred == y))


@contextlib.contextmanager
def _eval_mode(net: nn.Module) -> Iterator[None]:
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


@contextlib.contextmanager
def training_settings(num_threads: int | None) -> Iterator[None]:
    """Deterministic kernels (and optionally a thread count) for training only;
    torch's global settings are restored afterwards."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.set_num_threads(threads)


def _check_training_data(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if images.ndim != 4 or images.shape[2] < 8 or images.shape[3] < 8:
        raise DataError(f"images must be (N, C, H, W) with H, W >= 8, got {tuple(images.shape)}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or images.shape[0] == 0:
        raise DataError(
            f"need one label per image (N > 0): {tuple(labels.shape)} vs {tuple(images.shape)}"
        )
    if not torch.isfinite(images).all():
        raise DataError("images contain non-finite values")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"labels must lie in [0, {num_classes})")


def _data_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images.numpy(), dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(labels.numpy(), dtype="<i8").tobytes())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_paths(*, cache_dir: Path, cache_key: str) -> tuple[Path, Path]:
    """The weights file and its JSON sidecar for `cache_key`."""
    if not _CACHE_KEY.fullmatch(cache_key):
        raise ConfigError(
            f"cache_key {cache_key!r} must be 1-128 characters of [A-Za-z0-9._-], not starting with . - or _"
        )
    stem = f"evaluator-{cache_key}"
    return Path(cache_dir) / f"{stem}.safetensors", Path(cache_dir) / f"{stem}.json"


def _refuse(weights: Path, sidecar: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"evaluator cache {weights} is unusable ({why}); delete {weights} and {sidecar}"
        " to retrain it, or pass another cache key"
    )


def _load_cached(
    *, weights: Path, sidecar: Path, expected: dict[str, object], channels: int, num_classes: int
) -> _EvaluatorNet:
    if not (weights.is_file() and sidecar.is_file()):
        missing = sidecar if weights.is_file() else weights
        raise _refuse(weights, sidecar, f"{missing.name} is missing")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(weights, sidecar, f"sidecar unreadable: {exc}") from None
    if not isinstance(meta, dict):
        raise _refuse(weights, sidecar, "sidecar is not a JSON object")
    if meta.get("weights_sha256") != _file_digest(weights):
        raise _refuse(weights, sidecar, "SHA-256 of the weights does not match the sidecar")
    for field, value in expected.items():
        if meta.get(field) != value:
            raise _refuse(weights, sidecar, f"{field} is {meta.get(field)!r}, expected {value!r}")
    net = _build(channels=channels, num_classes=num_classes, generator=None)
    try:
        state = load_file(str(weights), device="cpu")
        reference = net.state_dict()
        if set(state) != set(reference) or any(state[k].shape != reference[k].shape for k in state):
            raise _refuse(weights, sidecar, "tensor names or shapes do not match the architecture")
        net.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise _refuse(weights, sidecar, f"weights unreadable: {exc}") from None
    return net


def _write_cache(*, net: nn.Module, weights: Path, sidecar: Path, meta: dict[str, object]) -> None:
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp_weights = weights.with_name(weights.name + ".tmp")
    tmp_sidecar = sidecar.with_name(sidecar.name + ".tmp")
    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    save_file(state, str(tmp_weights), metadata={"architecture": ARCHITECTURE})
    full = {**meta, "weights_sha256": _file_digest(tmp_weights)}
    tmp_sidecar.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # Weights first: a crash between the two renames leaves a weights file
    # without a sidecar, which the loader refuses rather than trusts.
    os.replace(tmp_weights, weights)
    os.replace(tmp_sidecar, sidecar)


def _train(
    net: _EvaluatorNet,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    generator: torch.Generator,
    epochs: int,
    batch_size: int,
    lr: float,
    num_threads: int | None,
) -> None:
    steps = epochs * -(-x.shape[0] // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    fit_classifier(net, opt, x, y, epochs=epochs, batch_size=batch_size, generator=generator,
                   num_threads=num_threads, scheduler=sched)


def fit_classifier(
    net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *, epochs: int,
    batch_size: int, generator: torch.Generator, num_threads: int | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> None:
    """Cross-entropy epochs over shuffled batches (order from `generator` only), then
    eval mode: the evaluator's and the downstream CNN's training loop."""
    n = x.shape[0]
    net.train()
    with training_settings(num_threads):
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if scheduler is not None:
                    scheduler.step()
    net.eval()


def train_evaluator(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    num_classes: int,
    generator: torch.Generator,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 3e-3,
    num_threads: int | None = 1,
    cache_dir: Path | None = None,
    cache_key: str = "default",
) -> Evaluator:
    """Train the evaluator on the real non-test pool, or load it from the cache.

    Training is deterministic on CPU given `generator` and `num_threads`
    (thread counts change float rounding, about 1e-7 in the weights). With `cache_dir`, the
    weights land in `cache_dir/evaluator-<cache_key>.safetensors` and a JSON
    sidecar; a later call with the same key and the same data, shape and
    hyper-parameters loads them. A cache that does not match (digest, shape,
    data, settings) raises `CheckpointError` naming the files to delete.
    The evaluator must never be released with the models (it has no DP).

    `num_threads` caps torch's intra-op threads while training (None: leave
    torch's setting). The network is small, so on 8x8 digits one thread is
    faster than two (6 epochs: 1.3 s against 3.2 s on 2 idle cores, and far
    worse when the cores are shared).
    """
    x = torch.as_tensor(images, dtype=torch.float32).detach().cpu().contiguous()
    y = torch.as_tensor(labels).detach().cpu().reshape(-1)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"labels must be integer class ids, got dtype {y.dtype}")
    y = y.to(torch.int64)
    _check_training_data(x, y, num_classes)
    if epochs < 1 or batch_size < 1 or not lr > 0 or (num_threads is not None and num_threads < 1):
        raise ConfigError("epochs, batch_size and num_threads must be >= 1 and lr > 0")
    channels, height, width = (int(s) for s in x.shape[1:])
    input_shape = (channels, height, width)
    expected: dict[str, object] = {
        "architecture": ARCHITECTURE,
        "num_classes": num_classes,
        "input_shape": list(input_shape),
        "feature_dim": FEATURE_DIM,
        "train_data_sha256": _data_digest(x, y),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
    }
    if cache_dir is not None:
        weights, sidecar = cache_paths(cache_dir=cache_dir, cache_key=cache_key)
        if weights.exists() or sidecar.exists():
            net = _load_cached(
                weights=weights,
                sidecar=sidecar,
                expected=expected,
                channels=channels,
                num_classes=num_classes,
            )
            net.eval()
            return Evaluator(net=net, num_classes=num_classes, input_shape=input_shape)
    net = _build(channels=channels, num_classes=num_classes, generator=generator)
    _train(
        net,
        x,
        y,
        generator=generator,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        num_threads=num_threads,
    )
    if cache_dir is not None:
        _write_cache(net=net, weights=weights, sidecar=sidecar, meta=expected)
    return Evaluator(net=net, num_classes=num_classes, input_shape=input_shape)
