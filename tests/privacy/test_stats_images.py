"""From released features back to images (securediff/privacy/stats_images.py): the
style colour-normalised-grey removes is put back exactly from the images' own
brightness, identity needs none, and every refusal names what is missing."""

from __future__ import annotations

import numpy as np
import pytest

from securediff.data.tint import apply_tint, client_tint
from securediff.errors import ConfigError
from securediff.privacy.stats_images import Style, features_to_images, restyle, style_of
from securediff.privacy.stats_release import colour_normalised_grey, identity


def _digits(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grey = np.where(rng.random((n, 1, 8, 8)) < 0.3, rng.uniform(0.2, 1.0, (n, 1, 8, 8)), -1.0)
    return np.repeat(grey, 3, axis=1).astype(np.float32), np.arange(n) % 3


def test_colour_normalised_grey_features_and_the_images_own_style_rebuild_a_tinted_image():
    grey, labels = _digits()
    tinted = apply_tint(grey, client_tint(1, 3))
    features = colour_normalised_grey(tinted.astype(np.float64))
    for i in range(len(tinted)):  # each image's own brightness as a one-record style
        style = style_of(tinted[i:i + 1], np.zeros(1, dtype=np.int64), 1)
        back = features_to_images(features[i:i + 1], np.zeros(1, dtype=np.int64),
                                  feature_map="colour-normalised-grey", shape=(3, 8, 8), style=style)
        np.testing.assert_allclose(back[0], tinted[i], atol=1e-5)


def test_restyle_turns_grey_into_the_clients_colour_and_keeps_the_features():
    grey, _ = _digits()
    client = apply_tint(grey, client_tint(2, 3))
    own = np.arange(len(grey))  # one class per image: the style is each image's own brightness
    out = restyle(grey, own, feature_map="colour-normalised-grey", style=style_of(client, own, len(grey)))
    assert out.shape == grey.shape and out.dtype == np.float32
    # Up to the map's 1e-3 guard, which weighs a grey and a tinted channel differently.
    np.testing.assert_allclose(out, client, atol=0.03)
    assert np.abs(out - client).max() < 0.1 * np.abs(grey - client).max()
    # With a class-level style the shape stays (up to clipping at full brightness).
    labels = own % 3
    style = style_of(client, labels, 3)
    out = restyle(grey, labels, feature_map="colour-normalised-grey", style=style)
    assert -1.0 <= out.min() <= out.max() <= 1.0
    np.testing.assert_allclose(colour_normalised_grey(out.astype(np.float64)),
                               colour_normalised_grey(grey.astype(np.float64)), atol=0.3)
    assert np.allclose(style_of(out, labels, 3).channel_means, style.channel_means, atol=0.02)
    assert not np.allclose(style_of(grey, labels, 3).channel_means, style.channel_means, atol=0.02)


def test_identity_needs_no_style_and_clips_to_the_image_range():
    x = np.linspace(-1.5, 1.5, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    back = features_to_images(identity(x), np.zeros(2, dtype=np.int64), feature_map="identity",
                              shape=(3, 4, 4), style=None)
    np.testing.assert_array_equal(back, np.clip(x, -1, 1).astype(np.float32))
    np.testing.assert_array_equal(restyle(x, np.zeros(2, dtype=np.int64), feature_map="identity", style=None),
                                  np.clip(x, -1, 1).astype(np.float32))


def test_a_class_without_records_takes_the_clients_overall_brightness():
    grey, _ = _digits(6)
    labels = np.array([0, 0, 0, 2, 2, 2])
    style = style_of(grey, labels, 3)
    per_record = ((grey.astype(np.float64) + 1) / 2).mean(axis=(2, 3))
    np.testing.assert_allclose(style.channel_means[1], per_record.mean(axis=0))
    np.testing.assert_allclose(style.channel_means[2], per_record[3:].mean(axis=0))


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"feature_map": "colour-normalised-grey", "style": None}, "needs a style of 3 channels"),
    ({"feature_map": "colour-normalised-grey", "style": Style(np.ones((1, 1)))}, "needs a style of 3 channels"),
    ({"feature_map": "projection", "style": None}, "no way back to images"),
])
def test_refusals_name_what_is_missing(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        features_to_images(np.zeros((1, 64)), np.zeros(1, dtype=np.int64), shape=(3, 8, 8), **kwargs)
