"""Loss at a timestep (Hu & Pang 2023; Matsumoto et al. 2023), calibrated per timestep.

A record's loss at timestep t is the model's denoising error at t, averaged
over a few fixed noise draws: a model that memorised a record predicts its
noise better. The attack observes the log of that loss at every timestep of a
grid, standardises each timestep by the reference records
(`audits.attacks.calibration`: raw losses differ in scale across timesteps
and across the personal models a pooled audit compares), and scores a record
by minus the mean standardised log loss over the timesteps that separate the
reference split best. Everything is chosen on the reference split, never on
the evaluated one.
"""

from __future__ import annotations

import numpy as np
import torch

from audits.attacks.base import AttackScores, AuditSplit, choose_on_reference, cut
from audits.attacks.calibration import combine_best
from audits.attacks.target import Records, Target, fixed_noise
from securediff.errors import ConfigError


def _check_noise(noise: torch.Tensor, records: Records) -> None:
    if noise.dim() != 5 or noise.shape[1:] != records.x.shape:
        raise ConfigError("noise must have shape (draws, *records.x.shape)")


def loss_scores(target: Target, records: Records, *, t: int, noise: torch.Tensor) -> np.ndarray:
    """-mean over draws of ||eps_theta(x_t, t) - z||^2 / d, x_t from the record's data point."""
    _check_noise(noise, records)
    x0 = target.data_point(records.x)
    total = torch.zeros(len(records))
    for z in noise:
        pred = target.eps(target.noised(x0, t, z), t, records.y)
        total += (pred - z).pow(2).flatten(1).mean(1)
    return -(total / noise.shape[0]).double().numpy()


def log_losses(target: Target, records: Records, *, grid: list[int], noise: torch.Tensor) -> np.ndarray:
    """(len(grid), N): minus the log of each record's loss (mean over draws) per timestep.
    The log tames the heavy upper tail of a few hard records."""
    return np.stack([-np.log(np.maximum(-loss_scores(target, records, t=t, noise=noise), 1e-12))
                     for t in grid])


def timestep_grid(target: Target, *, count: int = 12) -> list[int]:
    """`count` timesteps log-spaced over the segment (dense near its start, where
    the data point is least noised and memorisation shows most)."""
    offsets = np.unique(np.round(np.geomspace(1, target.length, num=count)).astype(int))
    return [target.start + int(o) for o in offsets]


def choose_timestep(target: Target, split: AuditSplit, *, noise: torch.Tensor,
                    grid: list[int] | None = None) -> tuple[int, dict[str, float]]:
    """The grid timestep whose loss score has the best AUC on the reference split
    (scored on the reference records only); LiRA observes the loss there."""
    ref = Records.concat([split.ref_members, split.ref_nonmembers])
    scored = {t: loss_scores(target, ref, t=t, noise=noise[:, :len(ref)])
              for t in (grid or timestep_grid(target))}
    choice = choose_on_reference(split, scored, orient=False)
    return int(choice.key), choice.reference_auc


def loss_attack(
    target: Target, split: AuditSplit, *, generator: torch.Generator, draws: int = 4,
    grid: list[int] | None = None,
) -> AttackScores:
    records, _ = split.population()
    noise = fixed_noise(tuple(records.x.shape), draws=draws, generator=generator)
    grid = grid or timestep_grid(target)
    values, chosen = combine_best(log_losses(target, records, grid=grid, noise=noise), list(grid),
                                  split, orient=False)
    return cut(attack="loss", target=target.name, split=split, values=values,
               details={"timesteps": chosen["combined"], "draws": draws,
                        "calibration": "per timestep, on the reference records",
                        "reference_auc_by_timestep": chosen["reference_auc_by_key"],
                        "reference_auc_by_count": chosen["reference_auc_by_k"]})
