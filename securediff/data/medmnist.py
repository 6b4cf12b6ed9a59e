"""MedMNIST `.npz` archives, read with numpy alone.

The medmnist package downloads at run time and needs torchvision, which does
not import beside our torch; its archives are plain `.npz` files, so we read
them directly. `allow_pickle=False` is not optional: an `.npz` with an object
array would otherwise run arbitrary code on load.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from securediff.errors import DataError

SPLITS = ("train", "val", "test")


def load_medmnist_npz(
    path: str | os.PathLike[str], *, split: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Images uint8 (N, H, W) or (N, H, W, 3), labels int64 (N,), and the class count.

    The class count is taken over every split in the archive, so train and
    test loads of one file agree even when a split lacks the rarest class.
    Multi-label sets (ChestMNIST) are refused: the pipeline conditions on one
    class per image.
    """
    if split not in SPLITS:
        raise DataError(f"MedMNIST archives have splits {list(SPLITS)}, not {split!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (medmnist-npz takes the path of a .npz archive)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        # pickled or non-numpy files under allow_pickle=False, truncated archives
        raise DataError(f"{path}: cannot read as a MedMNIST .npz ({_short(exc)})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not an .npz archive (a bare .npy array?)")
    with loaded as archive:
        keys = set(archive.files)
        for key in (f"{split}_images", f"{split}_labels"):
            if key not in keys:
                raise DataError(f"{path}: no {key!r} array (found {sorted(keys)})")
        try:
            images = archive[f"{split}_images"]
            labels = _labels(archive[f"{split}_labels"], path=path, key=f"{split}_labels")
            num_classes = 1 + max(
                int(_labels(archive[f"{s}_labels"], path=path, key=f"{s}_labels").max(initial=-1))
                for s in SPLITS
                if f"{s}_labels" in keys
            )
        except DataError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            # object arrays refused under allow_pickle=False; corrupt members
            raise DataError(f"{path}: cannot read as a MedMNIST .npz ({_short(exc)})") from None
    _check_images(images, path=path, key=f"{split}_images")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{path}: {split}_images holds {images.shape[0]} images but "
            f"{split}_labels holds {labels.shape[0]} labels"
        )
    return images, labels, num_classes


def _short(exc: BaseException, limit: int = 160) -> str:
    """zipfile quotes whole headers in its messages; keep the error one line."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _labels(raw: np.ndarray, *, path: Path, key: str) -> np.ndarray:
    if raw.dtype.kind not in "iu":
        raise DataError(f"{path}: {key} has dtype {raw.dtype}, expected integer class labels")
    if raw.ndim == 2 and raw.shape[1] > 1:
        raise DataError(
            f"{path}: {key} has {raw.shape[1]} label columns: a multi-label dataset, "
            "which is not supported (one class per image is required)"
        )
    if raw.ndim not in (1, 2):
        raise DataError(f"{path}: {key} has shape {raw.shape}, expected (N,) or (N, 1)")
    labels = raw.reshape(raw.shape[0]).astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: {key} holds a negative label ({int(labels.min())})")
    return labels


def _check_images(images: np.ndarray, *, path: Path, key: str) -> None:
    if images.dtype != np.uint8:
        raise DataError(f"{path}: {key} has dtype {images.dtype}, expected uint8")
    rgb = images.ndim == 4 and images.shape[3] == 3
    if not (images.ndim == 3 or rgb):
        raise DataError(
            f"{path}: {key} has shape {images.shape}, expected (N, H, W) or (N, H, W, 3)"
        )
    if 0 in images.shape:
        raise DataError(f"{path}: {key} holds no images (shape {images.shape})")
