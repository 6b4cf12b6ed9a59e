"""Per-client colour tints: feature skew in the manner of Colorized-MNIST.

The PFDM paper makes clients heterogeneous in appearance as well as in labels
by colouring each client's digits differently. Tints are hues spread evenly
round the HSV wheel at saturation 0.75 and full value, so every RGB component
lies in [0.25, 1]: no channel is switched off, and clients stay apart.
"""

from __future__ import annotations

import colorsys

import numpy as np

from securediff.errors import DataError

_SATURATION = 0.75  # with value 1, each component lies in [1 - 0.75, 1]


def client_tint(client_index: int, num_clients: int) -> np.ndarray:
    """RGB float64 (3,) in [0.25, 1]; client i of n gets hue i / n (client 0 red)."""
    if (
        isinstance(num_clients, bool)
        or not isinstance(num_clients, int | np.integer)
        or num_clients < 1
    ):
        raise DataError(f"num_clients must be a positive int, not {num_clients!r}")
    if isinstance(client_index, bool) or not isinstance(client_index, int | np.integer):
        raise DataError(f"client_index must be an int, not {client_index!r}")
    if not 0 <= client_index < num_clients:
        raise DataError(f"client_index {client_index} is outside 0..{num_clients - 1}")
    return np.array(colorsys.hsv_to_rgb(client_index / num_clients, _SATURATION, 1.0))


def apply_tint(images: np.ndarray, tint: np.ndarray) -> np.ndarray:
    """Tinted copy of float (N, 3, H, W) images in [-1, 1], as float32 in [-1, 1].

    Intensity (x + 1) / 2 in [0, 1] is multiplied by the tint per channel and
    mapped back, i.e. (x + 1) * tint - 1: black stays black, white becomes the tint.
    """
    images = np.asarray(images)
    tint = np.asarray(tint, dtype=np.float64)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype.kind != "f":
        raise DataError(
            f"apply_tint takes float (N, 3, H, W) images, not {images.dtype} {images.shape}"
        )
    if tint.shape != (3,) or not np.all((tint >= 0) & (tint <= 1)):
        raise DataError(f"a tint is 3 values in [0, 1], not {tint!r}")
    if images.size and not (
        np.all(np.isfinite(images)) and images.min() >= -1 and images.max() <= 1
    ):
        raise DataError("apply_tint takes images in [-1, 1]")
    scale = tint.astype(np.float32)[None, :, None, None]
    return (images.astype(np.float32) + np.float32(1.0)) * scale - np.float32(1.0)
