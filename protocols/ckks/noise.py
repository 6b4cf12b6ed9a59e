"""Gaussian flooding noise from the injected byte source.

A 32-byte key from `random_bytes` drives a ChaCha20 keystream (the source may be
OS-keyed or a test stream; nothing here touches a global generator). Normals come
from Box-Muller on 53-bit uniforms in float64, the construction of
`securediff.rng` (which `protocols` may not import); like every floating-point
sampler it carries the low-order-bit caveat of Mironov (CCS 2012).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms


def gaussian(n: int, *, sigma: float, random_bytes: Callable[[int], bytes]) -> np.ndarray:
    """`n` iid N(0, sigma^2) float64 draws."""
    half = (n + 1) // 2
    key = random_bytes(32)
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    words = np.frombuffer(stream.update(bytes(16 * half)), dtype="<u8") >> np.uint64(11)
    u = (words.astype(np.float64) + 1.0) * 2.0**-53  # in (0, 1]: log never sees 0
    u1, u2 = u[:half], u[half:]
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    z = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]
    return sigma * z
