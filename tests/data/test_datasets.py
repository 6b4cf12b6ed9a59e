"""Dataset values and the loader registry (all offline)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from securediff.data import DATASETS, Dataset, load_dataset
from securediff.data.datasets import FASHION_MNIST_CLASSES
from securediff.errors import DataError

# Class sizes of scikit-learn's digits (UCI optdigits test set), 1,797 in all.
DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_pinned(digits):
    assert digits.name == "digits" and len(digits) == 1797
    assert digits.images.dtype == np.float32 and digits.images.shape == (1797, 1, 8, 8)
    assert digits.image_shape == (1, 8, 8)
    assert digits.labels.dtype == np.int64
    assert np.bincount(digits.labels).tolist() == DIGIT_COUNTS
    assert digits.num_classes == 10 and digits.class_names == tuple("0123456789")
    assert digits.images.min() == -1.0 and digits.images.max() == 1.0
    # first row of the first digit (a zero) is 0 0 5 13 9 1 0 0 on the 0..16 scale
    np.testing.assert_array_equal(
        digits.images[0, 0, 0], [-1, -1, -0.375, 0.625, 0.125, -0.875, -1, -1]
    )
    assert load_dataset().name == "digits"  # the default


def test_colored_digits_replicate_gray(digits):
    colored = load_dataset("colored-digits")
    assert colored.images.shape == (1797, 3, 8, 8)
    for c in range(3):
        np.testing.assert_array_equal(colored.images[:, c], digits.images[:, 0])
    np.testing.assert_array_equal(colored.labels, digits.labels)


def test_unknown_name_lists_known():
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    for name in DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize("name", ["digits", "colored-digits"])
def test_builtin_misuse(name, tmp_path):
    with pytest.raises(DataError, match="split_test"):
        load_dataset(name, split="test")
    with pytest.raises(DataError, match="no path"):
        load_dataset(name, path=tmp_path)


@pytest.mark.parametrize("name", ["mnist-idx", "fashion-mnist-idx", "medmnist-npz"])
def test_file_datasets_need_a_path(name):
    with pytest.raises(DataError, match="path"):
        load_dataset(name)


def _idx(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.mark.parametrize("name", ["mnist-idx", "fashion-mnist-idx"])
def test_idx_dataset_scaling(tmp_path, name):
    images = np.array([[[0, 255], [51, 204]], [[255, 0], [0, 0]]], dtype=np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(0x803, images)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(0x801, np.array([7, 9], np.uint8)))
    ds = load_dataset(name, path=str(tmp_path), split="test")
    assert ds.name == name and ds.images.shape == (2, 1, 2, 2)
    # 0 -> -1, 255 -> 1, 51 -> 51 / 127.5 - 1 = -0.6, 204 -> 0.6
    np.testing.assert_allclose(ds.images[0, 0], [[-1, 1], [-0.6, 0.6]], atol=1e-7)
    assert ds.labels.tolist() == [7, 9]
    expected = FASHION_MNIST_CLASSES if name.startswith("fashion") else tuple("0123456789")
    assert ds.class_names == expected
    assert ds.class_names[9] == ("Ankle boot" if name.startswith("fashion") else "9")


def test_medmnist_rgb_channels_first(tmp_path):
    images = np.zeros((2, 2, 2, 3), np.uint8)
    images[0, 0, 0] = (255, 0, 51)  # one RGB pixel
    path = tmp_path / "blood.npz"
    np.savez(
        path,
        train_images=images,
        train_labels=np.array([[1], [3]]),
        test_images=images,
        test_labels=np.array([[0], [1]]),
    )
    ds = load_dataset("medmnist-npz", path=path)
    assert ds.images.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(ds.images[0, :, 0, 0], [1.0, -1.0, -0.6], atol=1e-7)
    assert ds.num_classes == 4 and ds.class_names == ("0", "1", "2", "3")


def test_registry_is_extensible(monkeypatch, digits):
    def tiny(*, path, split):
        return digits.subset(np.arange(5))

    monkeypatch.setitem(DATASETS, "tiny", tiny)
    assert len(load_dataset("tiny")) == 5


def test_subset(digits):
    sub = digits.subset(np.array([3, 0]))
    assert len(sub) == 2 and sub.labels.tolist() == [digits.labels[3], digits.labels[0]]
    np.testing.assert_array_equal(sub.images[1], digits.images[0])


def _good() -> dict:
    return {
        "name": "t",
        "images": np.zeros((3, 1, 2, 2), np.float32),
        "labels": np.array([0, 1, 1], np.int64),
        "num_classes": 2,
        "class_names": ("a", "b"),
    }


@pytest.mark.parametrize(
    "override",
    [
        {"name": ""},
        {"images": np.zeros((3, 1, 2, 2), np.float64)},
        {"images": np.zeros((3, 2, 2), np.float32)},
        {"images": np.full((3, 1, 2, 2), 1.5, np.float32)},
        {"images": np.full((3, 1, 2, 2), np.nan, np.float32)},
        {"labels": np.array([0, 1, 1], np.int32)},
        {"labels": np.array([0, 1], np.int64)},
        {"labels": np.array([0, 2, 1], np.int64)},
        {"labels": np.array([0, -1, 1], np.int64)},
        {"num_classes": 3},
        {"num_classes": True},
        {"images": np.zeros((0, 1, 2, 2), np.float32), "labels": np.zeros(0, np.int64)},
    ],
)
def test_dataset_validation(override):
    Dataset(**_good())  # the baseline is valid
    with pytest.raises(DataError):
        Dataset(**(_good() | override))
