"""PIA (Kong et al., ICLR 2024): proximal initialization.

eps_0 = eps_theta(x_0, 0) is the model's own noise guess at the start of the
segment; x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps_0 is built from it, and
the score is ||eps_0 - eps_theta(x_t, t)||_4^4 (smaller for members). Their
default t = 200 at T = 1000 is scaled to 20% of the segment and sits in a
small grid scanned on the reference split. As for SecMI, the direction is
chosen there too: a tiny model that memorised a record predicts a near-zero
eps_0 for it, so its x_t is nearly noise-free and the score can flip.
"""

from __future__ import annotations

import numpy as np

from audits.attacks.base import AttackScores, AuditSplit, choose_on_reference, cut
from audits.attacks.target import Records, Target

GRID_FRACTIONS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8)


def pia_distance(target: Target, records: Records, *, t: int) -> np.ndarray:
    x0 = target.data_point(records.x)
    eps0 = target.eps(x0, target.start + 1, records.y)  # eps_theta(x_0, 0), 0-based in the paper
    x_t = target.noised(x0, t, eps0)
    return (eps0 - target.eps(x_t, t, records.y)).abs().pow(4).flatten(1).sum(1).double().numpy()


def pia_attack(target: Target, split: AuditSplit, *,
               fractions: tuple[float, ...] = GRID_FRACTIONS) -> AttackScores:
    records, _ = split.population()
    grid = sorted({target.offset(f) for f in fractions})
    scored = {t: -pia_distance(target, records, t=t) for t in grid}
    choice = choose_on_reference(split, scored, orient=True)
    t = int(choice.key)
    return cut(attack="pia", target=target.name, split=split, values=choice.sign * scored[t],
               details={"timestep": t,
                        "direction": "smaller distance = member" if choice.sign > 0
                        else "larger distance = member (inverted on the reference split)",
                        "reference_auc_by_timestep": choice.reference_auc})
