"""From released features back to images: post-processing of a statistics
release (securediff.privacy.stats_release), with the style the feature map
removed put back.

A feature map may drop part of an image on purpose. `colour-normalised-grey`
divides each channel by its own spatial mean intensity, so f = g / m - 1 for an
image whose channels are one grey pattern g scaled per channel (a tint): the
features keep the shape and lose the per-channel brightness m_c. An image is
rebuilt as intensity i_c = m_c (f / B + 1), B = mean_c m_c / (m_c + e) (e: the
map's guard against an all-black channel; exact for a tinted image whose own
brightness is m), mapped to [-1, 1], where the per-class,
per-channel mean intensities m come from a `Style`:

- a client's own member records (`style_of(client's images, labels)`): the
  client's colour and ink, restored on its side. This reads the client's raw
  records, so it carries NO guarantee for them (the privacy statement says so);
- public data: what a shared model trains on (no private record).

`identity` drops nothing: its features are the image itself, and no style is
needed. Nothing here draws randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from securediff.errors import ConfigError
from securediff.privacy.stats_release import GREY_EPS, colour_normalised_grey

__all__ = ["Style", "features_to_images", "restyle", "style_of", "STYLE_FREE_MAPS"]

# The feature maps that keep the whole image (no style to restore).
STYLE_FREE_MAPS = ("identity",)


@dataclass(frozen=True, eq=False)
class Style:
    """Mean intensity in [0, 1] per class and channel, (K, c)."""

    channel_means: np.ndarray


def style_of(images: np.ndarray, labels: np.ndarray, num_classes: int) -> Style:
    """The mean spatial intensity of each channel over the records of each class;
    a class without records takes the mean over all records."""
    x = np.asarray(images, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 4 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ConfigError(f"style_of takes (N, c, H, W) images with N >= 1 labels, got {x.shape}, {y.shape}")
    per_record = ((x + 1.0) / 2.0).mean(axis=(2, 3))  # (N, c)
    overall = per_record.mean(axis=0)
    means = np.empty((num_classes, x.shape[1]))
    for k in range(num_classes):
        held = per_record[y == k]
        means[k] = held.mean(axis=0) if len(held) else overall
    return Style(channel_means=means)


def features_to_images(features: np.ndarray, labels: np.ndarray, *, feature_map: str,
                       shape: tuple[int, int, int], style: Style | None) -> np.ndarray:
    """float32 (N, c, H, W) images in [-1, 1] from features (N, d) of class `labels`."""
    f = np.asarray(features, dtype=np.float64)
    c, h, w = shape
    y = np.asarray(labels)
    if f.ndim != 2 or y.shape != (f.shape[0],):
        raise ConfigError(f"features_to_images takes (N, d) features and N labels, got {f.shape}, {y.shape}")
    if feature_map == "identity":
        if f.shape[1] != c * h * w:
            raise ConfigError(f"identity features have {c * h * w} entries for {shape} images, got {f.shape[1]}")
        return np.clip(f.reshape(-1, c, h, w), -1.0, 1.0).astype(np.float32)
    if feature_map != "colour-normalised-grey":
        raise ConfigError(f"no way back to images from feature map {feature_map!r}")
    if f.shape[1] != h * w:
        raise ConfigError(f"colour-normalised-grey features have {h * w} entries for {shape} images, "
                          f"got {f.shape[1]}")
    if style is None or style.channel_means.shape[1] != c:
        raise ConfigError(f"colour-normalised-grey needs a style of {c} channels to rebuild images")
    m = style.channel_means[y]  # (N, c)
    # A tinted image i_c = t_c g has f = B (g / mean(g) - 1), B = mean_c m_c / (m_c + e):
    # inverted exactly by i_c = m_c (f / B + 1).
    b = (m / (m + GREY_EPS)).mean(axis=1)[:, None, None, None]
    m = m[:, :, None, None]
    intensity = m * (f.reshape(-1, 1, h, w) / b + 1.0)
    return (2.0 * np.clip(intensity, 0.0, 1.0) - 1.0).astype(np.float32)


def restyle(images: np.ndarray, labels: np.ndarray, *, feature_map: str, style: Style | None) -> np.ndarray:
    """Images mapped to their features and back with `style`: whatever style they
    had (grey from a shared model, or the client's own) becomes `style`'s. The
    identity map keeps images as they are (clipped to [-1, 1])."""
    x = np.asarray(images, dtype=np.float64)
    if feature_map in STYLE_FREE_MAPS:
        return np.clip(x, -1.0, 1.0).astype(np.float32)
    if feature_map != "colour-normalised-grey":
        raise ConfigError(f"no way back to images from feature map {feature_map!r}")
    return features_to_images(colour_normalised_grey(x), labels, feature_map=feature_map,
                              shape=tuple(x.shape[1:]), style=style)
