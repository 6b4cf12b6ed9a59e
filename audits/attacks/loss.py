"""Loss at a timestep (Hu & Pang 2023; Matsumoto et al. 2023).

A record's score is minus the model's denoising loss at one timestep t,
averaged over a few fixed noise draws: a model that memorised a record
predicts its noise better. t is chosen by scanning a grid of timesteps on the
reference split (AUC there) and never on the evaluated split.
"""

from __future__ import annotations

import numpy as np
import torch

from audits.attacks.base import AttackScores, AuditSplit, choose_on_reference, cut
from audits.attacks.target import Records, Target, fixed_noise
from securediff.errors import ConfigError


def loss_scores(target: Target, records: Records, *, t: int, noise: torch.Tensor) -> np.ndarray:
    """-mean over draws of ||eps_theta(x_t, t) - z||^2 / d, x_t from the record's data point."""
    if noise.dim() != 5 or noise.shape[1:] != records.x.shape:
        raise ConfigError("noise must have shape (draws, *records.x.shape)")
    x0 = target.data_point(records.x)
    total = torch.zeros(len(records))
    for z in noise:
        pred = target.eps(target.noised(x0, t, z), t, records.y)
        total += (pred - z).pow(2).flatten(1).mean(1)
    return -(total / noise.shape[0]).double().numpy()


def timestep_grid(target: Target, *, count: int = 12) -> list[int]:
    """`count` timesteps log-spaced over the segment (dense near its start, where
    the data point is least noised and memorisation shows most)."""
    offsets = np.unique(np.round(np.geomspace(1, target.length, num=count)).astype(int))
    return [target.start + int(o) for o in offsets]


def choose_timestep(target: Target, split: AuditSplit, *, noise: torch.Tensor,
                    grid: list[int] | None = None) -> tuple[int, dict[str, float]]:
    """The grid timestep whose loss score has the best AUC on the reference split
    (scored on the reference records only)."""
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
    t, table = choose_timestep(target, split, noise=noise, grid=grid)
    values = loss_scores(target, records, t=t, noise=noise)
    return cut(attack="loss", target=target.name, split=split, values=values,
               details={"timestep": t, "draws": draws, "reference_auc_by_timestep": table})
