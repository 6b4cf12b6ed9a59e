"""Gaussian flooding noise from the injected byte source.

A 32-byte key from `random_bytes` drives a ChaCha20 keystream (the source may be
OS-keyed or a test stream; nothing here touches a global generator). Normals are
hazmat's Box-Muller on 53-bit uniforms, the construction `securediff.rng` uses
too; like every floating-point sampler it carries the low-order-bit caveat of
Mironov (CCS 2012).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from protocols.hazmat.chacha import chacha20_stream, standard_normal


def gaussian(n: int, *, sigma: float, random_bytes: Callable[[int], bytes]) -> np.ndarray:
    """`n` iid N(0, sigma^2) float64 draws."""
    return sigma * standard_normal(chacha20_stream(random_bytes(32)), n)
