"""MNIST-format IDX files, parsed by hand.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data in C order.
MNIST and Fashion-MNIST use only unsigned bytes (type 0x08), so only those are
accepted. The declared sizes are checked against what the file holds, so a
truncated download fails here, naming the file, rather than as a reshape error
somewhere in training. Data is read in chunks up to the declared size, so a
corrupt header cannot make us allocate more than the file actually contains.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from securediff.errors import DataError

IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions (N, H, W)
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension (N,)
MNIST_NUM_CLASSES = 10

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_MAX_DATA_BYTES = 1 << 32  # no MNIST-like file comes near 4 GiB; refuse such headers
_CHUNK = 1 << 24
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str], *, magic: int) -> np.ndarray:
    """Read one uint8 IDX file (plain, or gzip when the name ends in `.gz`)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return _parse(f, path=path, magic=magic)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({exc})") from None


def _parse(f: BinaryIO, *, path: Path, magic: int) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: truncated: {len(head)} bytes, shorter than the 4-byte IDX magic")
    found = int.from_bytes(head, "big")
    if found != magic:
        hint = (
            " (the file looks gzip-compressed: give it a .gz name)"
            if head[:2] == _GZIP_MAGIC
            else ""
        )
        raise DataError(
            f"{path}: bad IDX magic 0x{found:08X}, expected 0x{magic:08X} "
            f"(uint8 with {magic & 0xFF} dimension(s)){hint}"
        )
    ndim = magic & 0xFF
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: truncated header: {ndim} dimension(s) declared, fewer stored")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    expected = math.prod(dims)
    if expected > _MAX_DATA_BYTES:
        raise DataError(
            f"{path}: header declares dimensions {dims}, implausibly large for IDX data"
        )
    data = _read_at_most(f, expected + 1)
    if len(data) < expected:
        raise DataError(
            f"{path}: truncated: header declares dimensions {dims} ({expected} data bytes) "
            f"but the file holds {len(data)}"
        )
    if len(data) > expected:
        raise DataError(
            f"{path}: longer than its header declares (dimensions {dims}); corrupt file?"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _read_at_most(f: BinaryIO, n: int) -> bytearray:
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(n - len(buf), _CHUNK))
        if not chunk:
            break
        buf += chunk
    return buf


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory}: missing {stem} (neither {stem} nor {stem}.gz is there)")


def load_idx_split(
    directory: str | os.PathLike[str], *, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, H, W) and labels int64 (N,) of one MNIST-format split.

    Expects the file names of the original distribution: `train-*` for
    split="train", `t10k-*` for split="test", each optionally gzip-compressed.
    """
    if split not in _SPLIT_PREFIX:
        raise DataError(f"IDX datasets have splits {sorted(_SPLIT_PREFIX)}, not {split!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            f"{directory}: not a directory (IDX datasets take the folder holding the files)"
        )
    prefix = _SPLIT_PREFIX[split]
    images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, magic=IMAGES_MAGIC)
    labels = read_idx(labels_path, magic=LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path.name} holds {images.shape[0]} images but "
            f"{labels_path.name} holds {labels.shape[0]} labels (in {directory})"
        )
    if images.shape[0] == 0 or 0 in images.shape[1:]:
        raise DataError(f"{images_path}: holds no images (dimensions {images.shape})")
    if labels.max() >= MNIST_NUM_CLASSES:
        bad = int(np.flatnonzero(labels >= MNIST_NUM_CLASSES)[0])
        raise DataError(
            f"{labels_path}: label {int(labels[bad])} at position {bad}; "
            f"MNIST-format labels are 0..{MNIST_NUM_CLASSES - 1}"
        )
    return images, labels.astype(np.int64)
