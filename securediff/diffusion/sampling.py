"""Samplers over a reverse process split into segments.

PFDM runs the shared denoiser from x_T down to x_{t0} and the client's
personal denoiser from x_{t0} to x_0. Each segment is a diffusion model whose
"data" lives at its start step s (s = t0 for the shared model, whose training
data is the once-noised x~; s = 0 for the personal model), with the relative
schedule abar_t / abar_s. DDIM (eta = 0) and ancestral sampling (DDPM: every
step, eta = 1) are both the generalized DDIM update on that relative schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from securediff.diffusion.schedule import NoiseSchedule
from securediff.errors import ConfigError


@dataclass(frozen=True)
class SamplerSpec:
    kind: str = "ddim"  # "ddim" | "ancestral"
    steps: int = 100  # DDIM steps over the whole [0, T]; ancestral uses all T
    guidance: float = 0.0  # classifier-free guidance weight w (0 = conditional only)

    def __post_init__(self) -> None:
        if self.kind not in ("ddim", "ancestral"):
            raise ConfigError(f"sampler must be 'ddim' or 'ancestral', got {self.kind!r}")
        if self.steps < 1:
            raise ConfigError("sampler steps must be >= 1")
        if self.guidance < 0:
            raise ConfigError("guidance must be >= 0")


@dataclass(frozen=True)
class Segment:
    """`model` denoises t in (start, end]."""

    model: nn.Module
    start: int
    end: int


def segment_grid(segment: Segment, *, spec: SamplerSpec, T: int) -> list[int]:
    """Descending timesteps from `end` to `start`, both included."""
    length = segment.end - segment.start
    if spec.kind == "ancestral":
        return list(range(segment.end, segment.start - 1, -1))
    n = max(1, round(spec.steps * length / T))
    grid = np.unique(np.round(np.linspace(segment.start, segment.end, n + 1)).astype(int))
    return [int(t) for t in grid[::-1]]


def _predict_noise(
    model: nn.Module, x: torch.Tensor, t: int, labels: torch.Tensor, guidance: float, null_label: int
) -> torch.Tensor:
    tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    eps = model(x, tt, labels)
    if guidance > 0:
        uncond = model(x, tt, torch.full_like(labels, null_label))
        eps = (1 + guidance) * eps - guidance * uncond
    return eps


@torch.no_grad()
def sample_split(
    segments: Sequence[Segment],
    labels: torch.Tensor,
    *,
    schedule: NoiseSchedule,
    spec: SamplerSpec,
    shape: tuple[int, ...],
    generator: torch.Generator,
    null_label: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw len(labels) samples; `segments` are ordered from T down to 0 and must tile it."""
    bounds = [(s.start, s.end) for s in segments]
    if bounds[0][1] != schedule.T or bounds[-1][0] != 0:
        raise ConfigError("sampler segments must cover (0, T]")
    for (lo, _), (_, hi) in zip(bounds, bounds[1:], strict=False):
        if lo != hi:
            raise ConfigError("sampler segments must be contiguous")
    eta = 1.0 if spec.kind == "ancestral" else 0.0
    abar = schedule.abar
    labels = labels.to(device)
    x = torch.randn((len(labels), *shape), generator=generator).to(device)
    for seg in segments:
        seg.model.eval()
        grid = segment_grid(seg, spec=spec, T=schedule.T)
        for t, t_prev in zip(grid, grid[1:], strict=False):
            ar_t = abar[t] / abar[seg.start]
            ar_p = abar[t_prev] / abar[seg.start]
            eps = _predict_noise(seg.model, x, t, labels, spec.guidance, null_label)
            x_start = (x - np.sqrt(1 - ar_t) * eps) / np.sqrt(ar_t)
            if seg.start == 0:
                # Clean images live in [-1, 1]; re-derive eps so the step stays consistent.
                x_start = x_start.clamp(-1.0, 1.0)
                eps = (x - np.sqrt(ar_t) * x_start) / np.sqrt(1 - ar_t)
            var = eta**2 * (1 - ar_p) / (1 - ar_t) * (1 - ar_t / ar_p)
            x = np.sqrt(ar_p) * x_start + np.sqrt(max(1 - ar_p - var, 0.0)) * eps
            if var > 0:
                x = x + np.sqrt(var) * torch.randn(x.shape, generator=generator).to(device)
    return x.float()
