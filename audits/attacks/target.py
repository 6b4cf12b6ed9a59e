"""What an attack sees: one denoiser segment, queried as a black box.

A segment model denoises t in (start, end] and is a diffusion model over the
data at step `start` with the relative schedule abar_t / abar_start
(securediff/diffusion/loss.py). For a personal or non-private model
start = 0 and that data is the record itself. For PFDM's shared model
start = t0 and the data is x~ = sqrt(abar_t0) clip(x, C) + sqrt(1 - abar_t0) z,
whose noise z the attacker never sees: its best proxy for a record x is the
mean sqrt(abar_t0) clip(x, C), which is what `data_point` returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from securediff.diffusion.schedule import NoiseSchedule
from securediff.errors import ConfigError
from securediff.privacy.forward import clip_per_image


@dataclass(frozen=True)
class Records:
    """Records as their owner holds them: images (N, C, H, W) and labels (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dim() != 4 or self.y.dim() != 1 or self.x.shape[0] != self.y.shape[0]:
            raise ConfigError("records need images (N, C, H, W) and labels (N,)")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: np.ndarray) -> Records:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return Records(self.x[idx], self.y[idx])

    @staticmethod
    def concat(parts: list[Records]) -> Records:
        return Records(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))


@dataclass(frozen=True)
class Target:
    name: str
    model: nn.Module
    start: int
    end: int
    schedule: NoiseSchedule
    null_label: int
    clip_norm: float | None = None  # required when start > 0 (PFDM's shared segment)
    batch_size: int = 512

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= self.schedule.T:
            raise ConfigError(f"segment ({self.start}, {self.end}] is not inside (0, {self.schedule.T}]")
        if self.start > 0 and self.clip_norm is None:
            raise ConfigError("a segment starting after 0 needs the clip norm of its forward noise")

    @property
    def length(self) -> int:
        return self.end - self.start

    def rel(self, t: int) -> float:
        """abar_t / abar_start: the signal kept since the segment's start."""
        return float(self.schedule.abar[t] / self.schedule.abar[self.start])

    def data_point(self, x: torch.Tensor) -> torch.Tensor:
        """The attacker's version of the segment's data for records x."""
        if self.start == 0:
            return x.float()
        a = float(self.schedule.abar[self.start])
        return (math.sqrt(a) * clip_per_image(x, clip_norm=float(self.clip_norm))).float()

    def offset(self, fraction: float) -> int:
        """The timestep `fraction` of the way into the segment (at least start + 1)."""
        return min(self.end, self.start + max(1, round(fraction * self.length)))

    @torch.no_grad()
    def eps(self, x_t: torch.Tensor, t: int, y: torch.Tensor) -> torch.Tensor:
        """The model's noise prediction at timestep t, in batches, in eval mode."""
        if not self.start < t <= self.end:
            raise ConfigError(f"t = {t} is outside the segment ({self.start}, {self.end}]")
        self.model.eval()
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, x_t.shape[0], self.batch_size):
            xb = x_t[i:i + self.batch_size].to(device)
            tb = torch.full((xb.shape[0],), t, dtype=torch.long, device=device)
            out.append(self.model(xb, tb, y[i:i + self.batch_size].to(device)).float().cpu())
        return torch.cat(out) if out else torch.zeros_like(x_t)

    def noised(self, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        a = self.rel(t)
        return math.sqrt(a) * x0 + math.sqrt(1.0 - a) * noise


def fixed_noise(shape: tuple[int, ...], *, draws: int, generator: torch.Generator) -> torch.Tensor:
    """`draws` noise tensors of `shape`, drawn once so that every model (target
    and shadows) is queried with the same noise for the same record."""
    return torch.randn((draws, *shape), generator=generator)
