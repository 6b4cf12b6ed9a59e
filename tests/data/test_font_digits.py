"""Font digits: public images rendered locally from matplotlib's fonts."""

import socket

import numpy as np
import pytest

from securediff.data.font_digits import AUGMENTATIONS, font_files, provenance, render_font_digits


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("font-digits tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize(("size", "channels"), [(8, 1), (8, 3), (28, 1)])
def test_renders_ten_classes_in_range_at_the_private_size(size, channels, no_network):
    data = render_font_digits(size=size, channels=channels, per_class=3, generator=np.random.default_rng(0))
    assert data.images.shape == (30, channels, size, size) and data.images.dtype == np.float32
    assert np.bincount(data.labels).tolist() == [3] * 10
    assert data.images.min() >= -1.0 and data.images.max() <= 1.0
    assert np.all(data.images.reshape(30, -1).max(axis=1) == 1.0)  # every image has ink
    if channels == 3:  # grey: the tint is applied afterwards, as colored-digits does
        assert np.array_equal(data.images[:, 0], data.images[:, 2])


def test_deterministic_given_a_generator_and_augmented_by_it():
    def render(seed):
        return render_font_digits(size=8, channels=1, per_class=4, generator=np.random.default_rng(seed)).images

    assert np.array_equal(render(5), render(5))
    assert not np.array_equal(render(5), render(6))


def test_digits_differ_from_each_other():
    data = render_font_digits(size=8, channels=1, per_class=21, generator=np.random.default_rng(1))
    means = np.stack([data.images[data.labels == d].mean(axis=0).ravel() for d in range(10)])
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[~np.eye(10, dtype=bool)].min() > 0.5


def test_provenance_names_the_fonts_and_augmentations():
    record = provenance(size=8, channels=3, per_class=7)
    assert record["fonts"] == [p.name for p in font_files()] and len(record["fonts"]) >= 15
    assert any(name.startswith("DejaVuSans") for name in record["fonts"])
    assert "cmr10.ttf" in record["fonts"] and "cmsy10.ttf" not in record["fonts"]
    assert record["augmentations"]["rotation_degrees"] == AUGMENTATIONS["rotation_degrees"]
