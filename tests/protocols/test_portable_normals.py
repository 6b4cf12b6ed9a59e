"""The Gaussian sampler draws the same bits on every CPU: its log, cos and sin use
only IEEE-exact operations, where numpy's np.log / np.cos / np.sin take other code
paths (and give other last bits) on AVX-512 machines than on AVX2 ones. Checked
by running the sampler again with numpy's AVX-512 paths switched off (on a machine
without them the two runs are the same process twice), and against numpy's
functions for accuracy."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from protocols.hazmat.chacha import chacha20_stream, cos_sin_turns, log_unit, standard_normal

DRAW = ("import hashlib; from protocols.hazmat.chacha import chacha20_stream, standard_normal; "
        "print(hashlib.sha256(standard_normal(chacha20_stream(bytes(range(32))), 100001).tobytes())"
        ".hexdigest())")


def _digest_here() -> str:
    return hashlib.sha256(standard_normal(chacha20_stream(bytes(range(32))), 100001).tobytes()).hexdigest()


@pytest.mark.parametrize("disabled", ["X86_V4 AVX512_ICL AVX512_SPR", "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"])
def test_the_draws_do_not_depend_on_the_simd_paths_numpy_takes(disabled):
    env = {"NPY_DISABLE_CPU_FEATURES": disabled, "PATH": "", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", DRAW], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest_here()


def _unit_uniforms() -> np.ndarray:
    words = np.random.default_rng(7).integers(0, 2**53, 500_000, dtype=np.uint64)
    edges = np.array([0, 1, 2**52 - 1, 2**52, 2**53 - 2, 2**53 - 1, 2**51, 3 * 2**51], dtype=np.uint64)
    return (np.concatenate([words, edges]).astype(np.float64) + 1.0) * 2.0**-53


def test_log_is_within_a_few_ulp_of_numpy():
    u = _unit_uniforms()
    ours, ref = log_unit(u), np.log(u)
    assert np.all(np.abs(ours - ref) <= 4 * np.spacing(np.abs(ref)) + 1e-300)
    assert np.all(log_unit(np.array([1.0, 0.5, 0.25])) == np.log(np.array([1.0, 0.5, 0.25])))


def test_cos_and_sin_are_within_1e_15_of_numpy_and_exact_at_quarter_turns():
    x = _unit_uniforms()
    cos, sin = cos_sin_turns(x)
    assert np.max(np.abs(cos - np.cos(2 * np.pi * x))) < 1e-15
    assert np.max(np.abs(sin - np.sin(2 * np.pi * x))) < 1e-15
    cos, sin = cos_sin_turns(np.array([0.25, 0.5, 0.75, 1.0]))
    assert cos.tolist() == [0.0, -1.0, 0.0, 1.0] and sin.tolist() == [1.0, 0.0, -1.0, 0.0]
