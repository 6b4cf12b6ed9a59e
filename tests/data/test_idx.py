"""IDX parsing: tiny hand-written files, plain and gzip, and every way they break."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from securediff.data.idx import IMAGES_MAGIC, LABELS_MAGIC, load_idx_split, read_idx
from securediff.errors import DataError

IMAGES = np.array(
    [[[0, 255], [51, 7]], [[1, 2], [3, 4]], [[9, 8], [7, 6]]], dtype=np.uint8
)  # (3, 2, 2)
LABELS = np.array([3, 0, 9], dtype=np.uint8)


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write(path: Path, payload: bytes) -> Path:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_split(
    folder: Path, prefix: str = "train", *, gz: bool = False, images=IMAGES, labels=LABELS
) -> None:
    ext = ".gz" if gz else ""
    write(folder / f"{prefix}-images-idx3-ubyte{ext}", idx_bytes(IMAGES_MAGIC, images))
    write(folder / f"{prefix}-labels-idx1-ubyte{ext}", idx_bytes(LABELS_MAGIC, labels))


def test_header_bytes_are_the_documented_magic():
    # The MNIST page: images start 00 00 08 03, labels 00 00 08 01.
    assert idx_bytes(IMAGES_MAGIC, IMAGES)[:4] == b"\x00\x00\x08\x03"
    assert idx_bytes(LABELS_MAGIC, LABELS)[:4] == b"\x00\x00\x08\x01"


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_read_idx_plain_and_gzip(tmp_path, name):
    path = write(tmp_path / name, idx_bytes(IMAGES_MAGIC, IMAGES))
    out = read_idx(path, magic=IMAGES_MAGIC)
    assert out.dtype == np.uint8 and out.shape == (3, 2, 2)
    np.testing.assert_array_equal(out, IMAGES)
    out[0, 0, 0] = 1  # the result is an ordinary writable array


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(("split", "prefix"), [("train", "train"), ("test", "t10k")])
def test_load_split(tmp_path, gz, split, prefix):
    write_split(tmp_path, prefix, gz=gz)
    images, labels = load_idx_split(tmp_path, split=split)
    np.testing.assert_array_equal(images, IMAGES)
    assert labels.dtype == np.int64
    assert labels.tolist() == [3, 0, 9]


def test_plain_file_preferred_over_gz(tmp_path):
    write_split(tmp_path, gz=True, labels=np.array([1, 1, 1], np.uint8))
    write_split(tmp_path, gz=False)
    _, labels = load_idx_split(tmp_path, split="train")
    assert labels.tolist() == [3, 0, 9]


def _raises(folder: Path, *fragments: str) -> None:
    with pytest.raises(DataError) as info:
        load_idx_split(folder, split="train")
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data(tmp_path, gz):
    write_split(tmp_path, gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    write(tmp_path / name, idx_bytes(IMAGES_MAGIC, IMAGES)[:-1])
    _raises(tmp_path, name, "truncated", "12 data bytes", "holds 11")


def test_truncated_header(tmp_path):
    write_split(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00")
    _raises(tmp_path, "train-labels-idx1-ubyte", "truncated header")


def test_empty_file(tmp_path):
    write_split(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    _raises(tmp_path, "train-images-idx3-ubyte", "truncated")


def test_trailing_bytes(tmp_path):
    write_split(tmp_path)
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(IMAGES_MAGIC, IMAGES) + b"\x00")
    _raises(tmp_path, "train-images-idx3-ubyte", "longer than its header")


def test_wrong_magic(tmp_path):
    write_split(tmp_path)
    # a labels file where the images should be
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(LABELS_MAGIC, LABELS))
    _raises(tmp_path, "train-images-idx3-ubyte", "bad IDX magic 0x00000801", "0x00000803")


def test_float_idx_refused(tmp_path):
    write_split(tmp_path)
    payload = idx_bytes(IMAGES_MAGIC, IMAGES)
    write(tmp_path / "train-images-idx3-ubyte", b"\x00\x00\x0d\x03" + payload[4:])  # 0x0D: float
    _raises(tmp_path, "bad IDX magic 0x00000D03")


def test_gzip_content_under_plain_name_gets_a_hint(tmp_path):
    write_split(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(
        gzip.compress(idx_bytes(IMAGES_MAGIC, IMAGES))
    )
    _raises(tmp_path, "gzip-compressed")


def test_corrupt_gzip(tmp_path):
    write_split(tmp_path, gz=True)
    good = (tmp_path / "train-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(good[:12] + b"\xff" * 20)
    _raises(tmp_path, "train-labels-idx1-ubyte.gz")


def test_not_gzip_under_gz_name(tmp_path):
    write_split(tmp_path, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(idx_bytes(LABELS_MAGIC, LABELS))
    _raises(tmp_path, "train-labels-idx1-ubyte.gz", "cannot read")


def test_huge_declared_size_refused_without_allocating(tmp_path):
    write_split(tmp_path)
    header = struct.pack(">IIII", IMAGES_MAGIC, 2**31, 2**16, 2**16)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + b"\x00" * 10)
    _raises(tmp_path, "implausibly large")


def test_count_mismatch(tmp_path):
    write_split(tmp_path, labels=np.array([1, 2], np.uint8))
    _raises(tmp_path, "3 images", "2 labels", "train-labels-idx1-ubyte")


def test_label_out_of_range(tmp_path):
    write_split(tmp_path, labels=np.array([1, 10, 2], np.uint8))
    _raises(tmp_path, "train-labels-idx1-ubyte", "label 10 at position 1")


def test_no_images(tmp_path):
    write_split(tmp_path, images=np.zeros((0, 2, 2), np.uint8), labels=np.zeros(0, np.uint8))
    _raises(tmp_path, "holds no images")


def test_missing_file(tmp_path):
    write_split(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    _raises(tmp_path, "missing train-labels-idx1-ubyte", ".gz")


def test_missing_directory(tmp_path):
    _raises(tmp_path / "nope", "not a directory")


def test_unknown_split(tmp_path):
    write_split(tmp_path)
    with pytest.raises(DataError, match="splits"):
        load_idx_split(tmp_path, split="val")


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "absent", magic=LABELS_MAGIC)
