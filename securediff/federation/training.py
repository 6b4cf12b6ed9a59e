"""Local training loops shared by every strategy (plain Adam or DP-SGD)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from securediff.diffusion.loss import diffusion_loss
from securediff.diffusion.schedule import NoiseSchedule
from securediff.privacy.dpsgd import DPSGD, poisson_sample
from securediff.rng import RandomSource


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    schedule: NoiseSchedule,
    start: int,
    end: int,
    generator: torch.Generator,
    null_label: int,
    label_dropout: float,
) -> float:
    """`steps` Adam steps on minibatches drawn with replacement; returns the mean loss."""
    model.train()
    total = 0.0
    n = x.shape[0]
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=generator)
        loss = diffusion_loss(
            model, x[idx], y[idx], schedule=schedule, start=start, end=end,
            generator=generator, null_label=null_label, label_dropout=label_dropout,
        ).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total / max(steps, 1)


def dp_train_steps(
    dpsgd: DPSGD,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    sample_rate: float,
    source: RandomSource,
    schedule: NoiseSchedule,
    start: int,
    end: int,
    generator: torch.Generator,
    null_label: int,
    label_dropout: float,
) -> float:
    """DP-SGD steps on Poisson batches (drawn from the private `source`).

    The caller has reserved the steps in the ledger. Each per-copy loss draws
    its own timestep and noise, so with noise multiplicity K the K copies of a
    sample see K draws whose gradients DPSGD averages before clipping.
    """
    dpsgd.module.train()

    def per_copy_loss(module: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return diffusion_loss(
            module, xb, yb, schedule=schedule, start=start, end=end,
            generator=generator, null_label=null_label, label_dropout=label_dropout,
        )

    norms_seen = []
    for _ in range(steps):
        idx = torch.from_numpy(poisson_sample(x.shape[0], sample_rate=sample_rate, source=source))
        norms = dpsgd.step(per_copy_loss, x[idx], y[idx])
        if norms.numel():
            norms_seen.append(float(norms.mean()))
    return float(np.mean(norms_seen)) if norms_seen else 0.0
