"""Injected randomness.

Every random draw in securediff comes from a `RandomSource` handed in by the
caller. A private source is a ChaCha20 keystream under a 256-bit key taken from
the OS and held only in memory: DP noise, Poisson sampling and anything else a
privacy claim rests on is drawn from it. An insecure source derives its key
from a recorded seed so that test runs repeat bit for bit; every artefact of
such a run is labelled "not private".

The keystream, the 53-bit float64 uniforms and the Box-Muller normals are
`protocols.hazmat.chacha`, shared with the protocols' own noise. Like every
floating-point sampler Box-Muller has the low-order-bit weakness described by
Mironov (CCS 2012); the discrete samplers of distributed DP avoid it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os

import numpy as np
import torch

from protocols.hazmat.chacha import chacha20_stream, standard_normal, uniforms

_INSECURE_DOMAIN = b"securediff/insecure-deterministic/v1"
_CHILD_DOMAIN = b"securediff/child-stream/v1"


class RandomSource:
    """A cryptographic random stream; derive children per purpose with `child`."""

    def __init__(self, key: bytes, *, private: bool) -> None:
        if len(key) != 32:
            raise ValueError("RandomSource key must be 32 bytes")
        self._key = key
        self.private = private
        self._stream = chacha20_stream(key)

    @classmethod
    def from_os(cls) -> RandomSource:
        """A private source: its key comes from the OS and is never written anywhere."""
        return cls(os.urandom(32), private=True)

    @classmethod
    def insecure_from_seed(cls, seed: int) -> RandomSource:
        """A reproducible source for tests. Runs that use it are not private."""
        key = hashlib.sha256(_INSECURE_DOMAIN + str(int(seed)).encode()).digest()
        return cls(key, private=False)

    def child(self, label: str) -> RandomSource:
        """An independent stream for one purpose (a client, a mechanism, a round)."""
        key = hmac.new(self._key, _CHILD_DOMAIN + label.encode(), hashlib.sha256).digest()
        return RandomSource(key, private=self.private)

    def __repr__(self) -> str:  # never show the key
        return f"RandomSource(private={self.private})"

    # -- raw draws -------------------------------------------------------------
    def random_bytes(self, n: int) -> bytes:
        return self._stream(n)

    def _uint64(self, n: int) -> np.ndarray:
        return np.frombuffer(self.random_bytes(8 * n), dtype=np.uint64)

    def uniform(self, shape: tuple[int, ...] | int) -> np.ndarray:
        """Uniform float64 in (0, 1]: 53 random bits, never exactly zero."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return uniforms(self.random_bytes, math.prod(shape)).reshape(shape)

    def normal_np(self, shape: tuple[int, ...] | int) -> np.ndarray:
        """Standard normal float64 by Box-Muller (both branches used)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return standard_normal(self.random_bytes, math.prod(shape)).reshape(shape)

    def normal(
        self,
        shape: tuple[int, ...] | torch.Size,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        return torch.from_numpy(self.normal_np(tuple(shape))).to(dtype=dtype, device=device)

    def bernoulli(self, p: float, n: int) -> np.ndarray:
        """n independent draws, each True with probability p."""
        return self.uniform(n) <= p

    def integers(self, high: int, n: int) -> np.ndarray:
        """Uniform integers in [0, high) without modulo bias (rejection sampling)."""
        if not 0 < high <= 2**63:
            raise ValueError("high must be in (0, 2**63]")
        limit = (2**64 // high) * high  # accept below the largest multiple of high
        out = np.empty(0, dtype=np.uint64)
        while out.size < n:
            draw = self._uint64(max(n - out.size, 8))
            out = np.concatenate([out, draw[draw < np.uint64(limit)]]) if limit < 2**64 else draw
        return (out[:n] % np.uint64(high)).astype(np.int64)

    def torch_generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A torch generator for randomness no privacy claim rests on
        (initialisation, diffusion timesteps and training noise)."""
        seed = int.from_bytes(self.random_bytes(8), "little") >> 1
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        return gen

    def numpy_generator(self) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(int.from_bytes(self.random_bytes(16), "little")))
