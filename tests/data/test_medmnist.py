"""MedMNIST .npz reading: the archive layout, label shapes, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from securediff.data.medmnist import load_medmnist_npz
from securediff.errors import DataError


def arrays(rgb: bool = False) -> dict[str, np.ndarray]:
    shape = (4, 3, 3, 3) if rgb else (4, 3, 3)
    images = np.arange(np.prod(shape), dtype=np.int64).reshape(shape).astype(np.uint8)
    return {
        "train_images": images,
        "train_labels": np.array([[0], [2], [1], [2]], dtype=np.uint8),
        "val_images": images[:2],
        "val_labels": np.array([1, 0]),
        "test_images": images[:3],
        "test_labels": np.array([[4], [0], [1]]),  # class 4 only appears in test
    }


def save(tmp_path, **override):
    data = arrays() | override
    path = tmp_path / "set.npz"
    np.savez(path, **data)
    return path


@pytest.mark.parametrize("rgb", [False, True])
def test_loads_each_split(tmp_path, rgb):
    path = tmp_path / "set.npz"
    np.savez(path, **arrays(rgb))
    for split, n in [("train", 4), ("val", 2), ("test", 3)]:
        images, labels, num_classes = load_medmnist_npz(path, split=split)
        assert images.shape[0] == n and images.dtype == np.uint8
        assert labels.dtype == np.int64 and labels.shape == (n,)
        # class count from every split, so train and test agree
        assert num_classes == 5
    _, labels, _ = load_medmnist_npz(path, split="train")
    assert labels.tolist() == [0, 2, 1, 2]


def test_compressed_archive(tmp_path):
    path = tmp_path / "set.npz"
    np.savez_compressed(path, **arrays())
    images, _, _ = load_medmnist_npz(path, split="val")
    np.testing.assert_array_equal(images, arrays()["val_images"])


def test_multi_label_refused(tmp_path):
    path = save(tmp_path, train_labels=np.zeros((4, 14), dtype=np.uint8))
    with pytest.raises(DataError, match="multi-label"):
        load_medmnist_npz(path, split="train")


def test_pickled_object_array_refused(tmp_path):
    objects = np.empty(4, dtype=object)
    objects[:] = [{"a": 1}, 2, 3, 4]
    path = save(tmp_path, train_labels=objects)  # np.savez pickles object arrays
    with pytest.raises(DataError, match="set.npz"):
        load_medmnist_npz(path, split="train")


def test_pickle_disguised_as_npy_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.save(path.with_suffix(".npy"), np.array([{"x": 1}], dtype=object), allow_pickle=True)
    path.with_suffix(".npy").rename(path)
    with pytest.raises(DataError, match="evil.npz"):
        load_medmnist_npz(path, split="train")


def test_bare_npy_refused(tmp_path):
    path = tmp_path / "one.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match="not an .npz"):
        load_medmnist_npz(path, split="train")


def test_truncated_archive(tmp_path):
    path = save(tmp_path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="set.npz"):
        load_medmnist_npz(path, split="train")


@pytest.mark.parametrize("offset", [60, 120, 200])
def test_corrupt_compressed_member(tmp_path, offset):
    path = tmp_path / "set.npz"
    np.savez_compressed(path, **arrays())
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 8] = b"\xa5" * 8  # inside the first member's compressed data
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="set.npz") as info:
        load_medmnist_npz(path, split="train")
    assert len(str(info.value)) < 300 and "\n" not in str(info.value)


def test_text_file_refused(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("not an archive at all")
    with pytest.raises(DataError, match="notes.npz"):
        load_medmnist_npz(path, split="train")


def test_missing_key(tmp_path):
    data = arrays()
    del data["val_labels"]
    path = tmp_path / "set.npz"
    np.savez(path, **data)
    with pytest.raises(DataError, match="'val_labels'"):
        load_medmnist_npz(path, split="val")
    load_medmnist_npz(path, split="train")  # other splits still load


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"train_labels": np.array([0, 1, 2])}, "4 images but train_labels holds 3"),
        ({"train_images": np.zeros((4, 3, 3), np.float32)}, "expected uint8"),
        ({"train_images": np.zeros((4, 3, 3, 2), np.uint8)}, "expected (N, H, W)"),
        ({"train_images": np.zeros((0, 3, 3), np.uint8)}, "no images"),
        ({"train_labels": np.array([0.0, 1.0, 1.0, 0.0])}, "integer class labels"),
        ({"train_labels": np.array([0, -1, 1, 0])}, "negative label"),
        ({"test_labels": np.zeros((3, 1, 1), np.int64)}, "expected (N,) or (N, 1)"),
    ],
)
def test_malformed_arrays(tmp_path, override, fragment):
    path = save(tmp_path, **override)
    with pytest.raises(DataError) as info:
        load_medmnist_npz(path, split="train")
    assert fragment in str(info.value)


def test_missing_file_and_bad_split(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_medmnist_npz(tmp_path / "absent.npz", split="train")
    with pytest.raises(DataError, match="splits"):
        load_medmnist_npz(save(tmp_path), split="validation")
