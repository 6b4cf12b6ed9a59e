"""Datasets as one validated value: images in [-1, 1], integer labels.

Every loader works offline: the built-ins ship with scikit-learn, the others
read files the user already has. Nothing is downloaded at run time, so a run
never depends on a mirror being up or on what it served that day.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from securediff.data.idx import MNIST_NUM_CLASSES, load_idx_split
from securediff.data.medmnist import load_medmnist_npz
from securediff.errors import DataError

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(d) for d in range(10))


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images float32 (N, C, H, W) in [-1, 1] and labels int64 (N,) in [0, num_classes)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DataError("a dataset needs a non-empty name")
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.dtype != np.float32 or images.ndim != 4:
            raise DataError(f"{self.name}: images must be a float32 (N, C, H, W) array")
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.ndim != 1:
            raise DataError(f"{self.name}: labels must be an int64 (N,) array")
        if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise DataError(
                f"{self.name}: {images.shape[0]} images and {labels.shape[0]} labels "
                "(need the same, non-zero count)"
            )
        if not np.all(np.isfinite(images)) or images.min() < -1.0 or images.max() > 1.0:
            raise DataError(f"{self.name}: image values must be finite and in [-1, 1]")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int | np.integer):
            raise DataError(f"{self.name}: num_classes must be an int")
        if self.num_classes < 1 or labels.min() < 0 or labels.max() >= self.num_classes:
            raise DataError(f"{self.name}: labels must lie in [0, num_classes={self.num_classes})")
        if len(self.class_names) != self.num_classes:
            raise DataError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        object.__setattr__(self, "num_classes", int(self.num_classes))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    def subset(self, indices: np.ndarray) -> Dataset:
        """The records at `indices` (e.g. one client's members), same classes."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(
            name=self.name,
            images=self.images[idx],
            labels=self.labels[idx],
            num_classes=self.num_classes,
            class_names=self.class_names,
        )


DatasetLoader = Callable[..., Dataset]
"""A registry entry: called as `loader(path=Path | None, split=str)`."""


def _scale_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, 3) -> float32 (N, C, H, W) in [-1, 1]; 0 -> -1, 255 -> 1."""
    x = images[:, None] if images.ndim == 3 else np.moveaxis(images, 3, 1)
    out = x.astype(np.float32)
    out /= np.float32(127.5)
    out -= np.float32(1.0)
    return out


def _only_train(name: str, split: str) -> None:
    if split != "train":
        raise DataError(
            f"{name} has no predefined {split!r} split: load split='train' (all 1,797 images) "
            "and take the fixed test split with securediff.data.split_test"
        )


def _no_path(name: str, path: Path | None) -> None:
    if path is not None:
        raise DataError(f"{name} ships with scikit-learn and takes no path (got {path})")


def _need_path(name: str, path: Path | None) -> Path:
    if path is None:
        raise DataError(f"{name} reads local files: give the path to them")
    return path


def _digits_gray() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # lazy: scikit-learn is slow to import

    raw = load_digits()
    images = (raw.images / 8.0 - 1.0).astype(np.float32)[:, None]  # 0..16 -> [-1, 1]
    return images, raw.target.astype(np.int64)


def _load_digits(*, path: Path | None, split: str) -> Dataset:
    _no_path("digits", path)
    _only_train("digits", split)
    images, labels = _digits_gray()
    return Dataset(
        name="digits", images=images, labels=labels, num_classes=10, class_names=DIGIT_CLASSES
    )


def _load_colored_digits(*, path: Path | None, split: str) -> Dataset:
    _no_path("colored-digits", path)
    _only_train("colored-digits", split)
    images, labels = _digits_gray()
    return Dataset(
        name="colored-digits",
        images=np.repeat(images, 3, axis=1),
        labels=labels,
        num_classes=10,
        class_names=DIGIT_CLASSES,
    )


def _idx_loader(name: str, class_names: tuple[str, ...]) -> DatasetLoader:
    def load(*, path: Path | None, split: str) -> Dataset:
        images, labels = load_idx_split(_need_path(name, path), split=split)
        return Dataset(
            name=name,
            images=_scale_uint8(images),
            labels=labels,
            num_classes=MNIST_NUM_CLASSES,
            class_names=class_names,
        )

    return load


def _load_medmnist(*, path: Path | None, split: str) -> Dataset:
    images, labels, num_classes = load_medmnist_npz(_need_path("medmnist-npz", path), split=split)
    return Dataset(
        name="medmnist-npz",
        images=_scale_uint8(images),
        labels=labels,
        num_classes=num_classes,
        class_names=tuple(str(c) for c in range(num_classes)),
    )


DATASETS: dict[str, DatasetLoader] = {
    "digits": _load_digits,
    "colored-digits": _load_colored_digits,
    "mnist-idx": _idx_loader("mnist-idx", DIGIT_CLASSES),
    "fashion-mnist-idx": _idx_loader("fashion-mnist-idx", FASHION_MNIST_CLASSES),
    "medmnist-npz": _load_medmnist,
}
"""Name -> loader called as `loader(path=..., split=...)`; add entries to extend."""


def load_dataset(
    name: str = "digits", *, path: str | os.PathLike[str] | None = None, split: str = "train"
) -> Dataset:
    """Load a dataset by registry name; every failure is one `DataError`."""
    loader = DATASETS.get(name)
    if loader is None:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return loader(path=None if path is None else Path(path), split=split)
