"""Per-client colour tints."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securediff.data import apply_tint, client_tint
from securediff.errors import DataError


def test_three_clients_are_red_green_blue():
    np.testing.assert_allclose(client_tint(0, 3), [1.0, 0.25, 0.25])
    np.testing.assert_allclose(client_tint(1, 3), [0.25, 1.0, 0.25])
    np.testing.assert_allclose(client_tint(2, 3), [0.25, 0.25, 1.0])
    np.testing.assert_allclose(client_tint(1, 2), [0.25, 1.0, 1.0])  # cyan opposite red


@pytest.mark.parametrize("num_clients", [2, 5, 10, 20])
def test_tints_in_range_distinct_and_deterministic(num_clients):
    tints = [client_tint(i, num_clients) for i in range(num_clients)]
    for t in tints:
        assert t.shape == (3,) and t.min() >= 0.25 and t.max() <= 1.0
    # Round the HSV hexagon at saturation 0.75, neighbouring hues 1/K of a turn
    # apart sit 6 * 0.75 / K apart in L1; no pair is closer than neighbours.
    for a, b in itertools.combinations(tints, 2):
        assert np.abs(a - b).sum() > 4.5 / num_clients - 1e-9
    np.testing.assert_array_equal(client_tint(1, num_clients), tints[1])


@pytest.mark.parametrize(("index", "num"), [(3, 3), (-1, 3), (0, 0), (1.0, 3), (True, 3)])
def test_client_tint_rejects(index, num):
    with pytest.raises(DataError):
        client_tint(index, num)


@given(
    st.integers(0, 9),
    st.lists(st.floats(-1.0, 1.0, width=32), min_size=12, max_size=12),
)
def test_apply_tint_keeps_range(index, values):
    images = np.array(values, dtype=np.float32).reshape(1, 3, 2, 2)
    out = apply_tint(images, client_tint(index, 10))
    assert out.dtype == np.float32 and out.shape == images.shape
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_apply_tint_values():
    gray = np.stack([np.full((3, 1, 1), v, np.float32) for v in (-1.0, 0.0, 1.0)])  # (3, 3, 1, 1)
    tint = np.array([1.0, 0.5, 0.25])
    out = apply_tint(gray, tint)[:, :, 0, 0]
    np.testing.assert_allclose(out[0], [-1, -1, -1])  # black stays black
    np.testing.assert_allclose(out[1], [0.0, -0.5, -0.75])  # mid-gray: intensity 0.5 x tint
    np.testing.assert_allclose(out[2], [1.0, 0.0, -0.5])  # white becomes the tint
    assert not np.shares_memory(out, gray)


def test_different_clients_give_different_images():
    images = np.zeros((2, 3, 4, 4), np.float32)
    a, b = apply_tint(images, client_tint(0, 2)), apply_tint(images, client_tint(1, 2))
    assert not np.allclose(a, b)


@pytest.mark.parametrize(
    ("images", "tint"),
    [
        (np.zeros((2, 1, 4, 4), np.float32), np.ones(3)),
        (np.zeros((2, 3, 4, 4), np.uint8), np.ones(3)),
        (np.full((2, 3, 4, 4), 1.5, np.float32), np.ones(3)),
        (np.zeros((2, 3, 4, 4), np.float32), np.ones(4)),
        (np.zeros((2, 3, 4, 4), np.float32), np.array([1.0, 1.2, 0.5])),
    ],
)
def test_apply_tint_rejects(images, tint):
    with pytest.raises(DataError):
        apply_tint(images, tint)
