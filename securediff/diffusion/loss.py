"""Epsilon-prediction loss on one segment of the forward process.

A segment starts at step `start` (0 for clean data; t0 for PFDM's shared
denoiser, whose "data" is the once-noised x~ = x_{t0}) and covers timesteps
(start, end]. Inputs are made by continuing the forward process from the
segment's data: x_t = sqrt(abar_t/abar_start) x_start + sqrt(1 - abar_t/abar_start) z,
and the model learns z. For start = t0 this needs nothing but x~: the clean
image, and the noise that made x~, never enter the shared model's training.
"""

from __future__ import annotations

import torch

from securediff.diffusion.schedule import NoiseSchedule


def diffusion_loss(
    model: torch.nn.Module,
    x_start: torch.Tensor,
    labels: torch.Tensor,
    *,
    schedule: NoiseSchedule,
    start: int,
    end: int,
    generator: torch.Generator,
    null_label: int | None = None,
    label_dropout: float = 0.0,
) -> torch.Tensor:
    """Per-sample losses (shape (B,)); t is drawn uniformly from (start, end]."""
    batch = x_start.shape[0]
    device = x_start.device
    t = torch.randint(start + 1, end + 1, (batch,), generator=generator).to(device)
    noise = torch.randn(x_start.shape, generator=generator).to(device)
    abar = schedule.abar_tensor(device)
    rel = (abar[t] / abar[start]).view(-1, *([1] * (x_start.dim() - 1)))
    x_t = rel.sqrt() * x_start + (1.0 - rel).sqrt() * noise
    if null_label is not None and label_dropout > 0:
        # Classifier-free guidance: train the unconditional model on the same net.
        drop = torch.rand(batch, generator=generator).to(device) < label_dropout
        labels = torch.where(drop, torch.full_like(labels, null_label), labels)
    pred = model(x_t, t, labels)
    return (pred - noise).pow(2).flatten(1).mean(1)
