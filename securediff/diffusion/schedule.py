"""Noise schedules, computed in float64 and cast only when used.

Convention (DESIGN.md): timesteps t = 1..T, beta_t = linspace(b0, b1, T)[t-1],
abar_t = prod_{s<=t} (1 - beta_s). Arrays are indexed by t with index 0 meaning
"no noise" (beta_0 = 0, abar_0 = 1), so abar[t0] is the paper's abar_{t0}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from securediff.errors import ConfigError


@dataclass(frozen=True)
class NoiseSchedule:
    name: str
    T: int
    betas: np.ndarray = field(repr=False)  # float64, length T + 1, betas[0] = 0
    abar: np.ndarray = field(repr=False)  # float64, length T + 1, abar[0] = 1

    def abar_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.tensor(self.abar, dtype=torch.float32, device=device)

    def relative_abar(self, t: np.ndarray | int, start: int) -> np.ndarray:
        """abar_t / abar_start: the signal kept since step `start` (float64)."""
        return self.abar[t] / self.abar[start]


def _from_betas(name: str, betas: np.ndarray) -> NoiseSchedule:
    betas = np.concatenate([[0.0], betas.astype(np.float64)])
    abar = np.cumprod(1.0 - betas)
    betas.setflags(write=False)
    abar.setflags(write=False)
    return NoiseSchedule(name=name, T=len(betas) - 1, betas=betas, abar=abar)


def linear_schedule(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """DDPM's linear betas (Ho et al. 2020)."""
    return _from_betas("linear", np.linspace(beta_start, beta_end, T, dtype=np.float64))


def cosine_schedule(T: int, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Nichol & Dhariwal (2021): abar(t) = f(t)/f(0), f(t) = cos^2(((t/T)+s)/(1+s) * pi/2)."""
    steps = np.arange(T + 1, dtype=np.float64)
    f = np.cos(((steps / T) + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = np.clip(1.0 - abar[1:] / abar[:-1], 0.0, max_beta)
    return _from_betas("cosine", betas)


def make_schedule(
    name: str, *, T: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> NoiseSchedule:
    if T < 2:
        raise ConfigError(f"diffusion.T must be at least 2, got {T}")
    if name == "linear":
        if not 0 < beta_start < beta_end < 1:
            raise ConfigError("diffusion betas need 0 < beta_start < beta_end < 1")
        return linear_schedule(T, beta_start, beta_end)
    if name == "cosine":
        return cosine_schedule(T)
    raise ConfigError(f"diffusion.schedule must be 'linear' or 'cosine', got {name!r}")
