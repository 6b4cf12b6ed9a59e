from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from securediff.errors import CheckpointError, ConfigError, DataError
from securediff.evaluation import Evaluator, train_evaluator
from securediff.evaluation.evaluator import FEATURE_DIM, cache_paths


def _small(digits, seed=0, **kw) -> Evaluator:
    return train_evaluator(
        digits.pool_x[:200],
        digits.pool_y[:200],
        num_classes=10,
        generator=torch.Generator().manual_seed(seed),
        epochs=1,
        **kw,
    )


def _weights(ev: Evaluator) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in ev.net.state_dict().items()}


def test_evaluator_trained_on_the_pool_is_accurate(digits, evaluator):
    assert evaluator.accuracy(digits.test_x, digits.test_y) > 0.9
    pred = evaluator.predict(digits.test_x)
    assert pred.shape == (digits.test_x.shape[0],) and pred.dtype == np.int64


def test_features_are_batched_float64_and_repeatable(digits, evaluator):
    x = digits.test_x[:100]
    f = evaluator.features(x)
    assert f.shape == (100, FEATURE_DIM) and f.dtype == np.float64
    np.testing.assert_array_equal(f, evaluator.features(torch.from_numpy(x)))
    np.testing.assert_allclose(evaluator.features(x, batch_size=7), f, rtol=1e-5, atol=1e-6)
    assert evaluator.features(x[:0]).shape == (0, FEATURE_DIM)
    assert not evaluator.net.training


def test_wrong_input_shape_is_refused(digits, evaluator):
    with pytest.raises(DataError, match="shape"):
        evaluator.features(np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(DataError):
        evaluator.accuracy(digits.test_x[:10], digits.test_y[:9])


def test_training_is_deterministic_and_leaves_global_state_alone(digits):
    rng_state = torch.random.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    a, b, c = _weights(_small(digits)), _weights(_small(digits)), _weights(_small(digits, seed=1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.get_num_threads() == threads


def test_other_channel_counts_and_sizes():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 12, 10, generator=g) * 2 - 1
    y = torch.arange(40) % 4
    ev = train_evaluator(x, y, num_classes=4, generator=g, epochs=1)
    assert ev.input_shape == (3, 12, 10)
    assert ev.features(x).shape == (40, FEATURE_DIM)
    with pytest.raises(DataError, match="H, W >= 8"):
        train_evaluator(x[:, :, :7], y, num_classes=4, generator=g, epochs=1)


def test_training_rejects_bad_inputs(digits):
    x, y = digits.pool_x[:20], digits.pool_y[:20]
    g = torch.Generator().manual_seed(0)
    with pytest.raises(DataError):
        train_evaluator(x, y + 10, num_classes=10, generator=g)
    with pytest.raises(DataError):
        train_evaluator(x, y.astype(np.float32), num_classes=10, generator=g)
    with pytest.raises(DataError):
        train_evaluator(x, y[:5], num_classes=10, generator=g)
    with pytest.raises(ConfigError):
        train_evaluator(x, y, num_classes=10, generator=g, epochs=0)
    with pytest.raises(ConfigError, match="cache_key"):
        train_evaluator(x, y, num_classes=10, generator=g, cache_dir=".", cache_key="../escape")


def test_cache_round_trips(digits, tmp_path):
    first = _small(digits, cache_dir=tmp_path, cache_key="digits")
    weights, sidecar = cache_paths(cache_dir=tmp_path, cache_key="digits")
    assert weights.name == "evaluator-digits.safetensors" and weights.is_file()
    meta = json.loads(sidecar.read_text())
    assert meta["num_classes"] == 10 and meta["input_shape"] == [1, 8, 8]
    assert len(meta["weights_sha256"]) == 64
    # A different generator cannot matter: the weights come from the cache.
    again = _small(digits, seed=99, cache_dir=tmp_path, cache_key="digits")
    a, b = _weights(first), _weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(first.features(digits.test_x), again.features(digits.test_x))
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupted_weights_are_refused(digits, tmp_path):
    _small(digits, cache_dir=tmp_path, cache_key="k")
    weights, sidecar = cache_paths(cache_dir=tmp_path, cache_key="k")
    blob = bytearray(weights.read_bytes())
    blob[-5] ^= 0x01
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256") as exc:
        _small(digits, cache_dir=tmp_path, cache_key="k")
    assert str(weights) in str(exc.value) and "delete" in str(exc.value)


def test_wrong_shapes_are_refused_even_with_a_matching_digest(digits, tmp_path):
    _small(digits, cache_dir=tmp_path, cache_key="k")
    weights, sidecar = cache_paths(cache_dir=tmp_path, cache_key="k")
    state = load_file(str(weights))
    state["head.weight"] = torch.zeros(3, FEATURE_DIM)
    save_file(state, str(weights))
    meta = json.loads(sidecar.read_text())
    meta["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shapes"):
        _small(digits, cache_dir=tmp_path, cache_key="k")


def test_mismatched_settings_or_missing_sidecar_are_refused(digits, tmp_path):
    _small(digits, cache_dir=tmp_path, cache_key="k")
    weights, sidecar = cache_paths(cache_dir=tmp_path, cache_key="k")
    g = torch.Generator().manual_seed(0)
    x, y = digits.pool_x[:200], digits.pool_y[:200]
    with pytest.raises(CheckpointError, match="num_classes"):
        train_evaluator(
            x, y, num_classes=12, generator=g, epochs=1, cache_dir=tmp_path, cache_key="k"
        )
    with pytest.raises(CheckpointError, match="train_data_sha256"):
        train_evaluator(
            x[:150],
            y[:150],
            num_classes=10,
            generator=g,
            epochs=1,
            cache_dir=tmp_path,
            cache_key="k",
        )
    sidecar.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        _small(digits, cache_dir=tmp_path, cache_key="k")
    # Clearing the files as the message says makes it train again.
    weights.unlink()
    assert _small(digits, cache_dir=tmp_path, cache_key="k").num_classes == 10
