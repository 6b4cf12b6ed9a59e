"""SecMI (Duan et al., ICML 2023): the t-error of deterministic DDIM inversion.

The record's data point is carried to step t by deterministic DDIM inversion
in strides of k, then one more stride out to t + k and one DDIM step back;
the t-error is ||x'_t - x_t||^2. Their defaults, t = 100 and k = 10 at
T = 1000, are scaled to the segment (t = start + 10% of its length, k = t/10
of the offset) and sit in a small grid of t (same ratio k = t/10) scanned on
the reference split.

Direction: the paper's members have the smaller t-error. In tiny, heavily
memorising models we measured the opposite (the inversion of a memorised
record stays nearly noise-free, an input the model never saw at step t, so
the round trip drifts), so the direction is chosen on the reference split
together with t, and reported.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from audits.attacks.base import AttackScores, AuditSplit, cut
from audits.attacks.calibration import combine_best
from audits.attacks.target import Records, Target
from securediff.errors import ConfigError

GRID_FRACTIONS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.4)


def ddim_move(target: Target, x: torch.Tensor, y: torch.Tensor, *, t_from: int, t_to: int
              ) -> torch.Tensor:
    """One deterministic DDIM step from t_from to t_to (either direction). At the
    segment start the model is queried at start + 1, the first step it was
    trained on (the papers' eps_theta(x_0, 0) in 0-based timesteps)."""
    eps = target.eps(x, max(t_from, target.start + 1), y)
    a_from, a_to = target.rel(t_from), target.rel(t_to)
    x0 = (x - math.sqrt(1.0 - a_from) * eps) / math.sqrt(a_from)
    return math.sqrt(a_to) * x0 + math.sqrt(1.0 - a_to) * eps


def steps_at(target: Target, fraction: float) -> tuple[int, int]:
    """(t, k) at `fraction` of the segment, k = t/10 of the offset (at least 1)."""
    t = target.offset(fraction)
    k = max(1, round((t - target.start) / 10))
    if t + k > target.end:
        t = target.end - k
    if t <= target.start:
        raise ConfigError(f"segment of length {target.length} is too short for SecMI")
    return t, k


def t_error(target: Target, records: Records, *, t: int, k: int) -> np.ndarray:
    if not (target.start < t and t + k <= target.end and k >= 1):
        raise ConfigError(f"SecMI needs start < t and t + k <= end, got t={t}, k={k}")
    x = target.data_point(records.x)
    cur = target.start
    while cur < t:
        nxt = min(cur + k, t)
        x = ddim_move(target, x, records.y, t_from=cur, t_to=nxt)
        cur = nxt
    out = ddim_move(target, x, records.y, t_from=t, t_to=t + k)
    back = ddim_move(target, out, records.y, t_from=t + k, t_to=t)
    return (back - x).pow(2).flatten(1).sum(1).double().numpy()


def secmi_attack(target: Target, split: AuditSplit, *,
                 fractions: tuple[float, ...] = GRID_FRACTIONS) -> AttackScores:
    """Minus the log t-error at each (t, k) of the grid, calibrated per (t, k) and
    combined over the best ones as the loss attack does (`audits.attacks.calibration`);
    the direction is chosen on the reference split too."""
    records, _ = split.population()
    grid = sorted({steps_at(target, f) for f in fractions})
    values = np.stack([-np.log(np.maximum(t_error(target, records, t=t, k=k), 1e-300))
                       for t, k in grid])
    scores, chosen = combine_best(values, grid, split, orient=True)
    return cut(attack="secmi", target=target.name, split=split, values=scores,
               details={"t_and_stride": chosen["combined"],
                        "direction": "smaller t-error = member" if chosen["direction"] != "inverted"
                        else "larger t-error = member (inverted on the reference split)",
                        "calibration": "per (t, k), on the reference records",
                        "reference_auc_by_t_k": chosen["reference_auc_by_key"],
                        "reference_auc_by_count": chosen["reference_auc_by_k"]})
