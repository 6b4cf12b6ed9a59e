"""Splits and scores shared by every attack.

Every attack scores each record (higher = "member"). The records of the
audited population are split once, by the auditor's randomness, into a
reference split and an evaluated split (AUC, ROC and bounds are reported
there only). Hyperparameters (timestep, direction) are chosen on the
reference members against the first half of the reference non-members; the
second half is kept out of that choice, so that thresholds set on it keep
their false positive rate on the evaluated non-members (a threshold set on
the very scores a timestep was chosen with is biased towards them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audits.attacks.target import Records, Target
from securediff.errors import ConfigError


@dataclass(frozen=True)
class AuditSplit:
    ref_members: Records
    ref_nonmembers: Records
    eval_members: Records
    eval_nonmembers: Records

    def population(self) -> tuple[Records, np.ndarray]:
        """Every record (ref members, ref non-members, eval members, eval
        non-members, in that order) and its membership."""
        parts = [self.ref_members, self.ref_nonmembers, self.eval_members, self.eval_nonmembers]
        member = np.concatenate([np.full(len(p), i % 2 == 0) for i, p in enumerate(parts)])
        return Records.concat(parts), member

    @property
    def selection_nonmembers(self) -> int:
        """How many reference non-members (the first ones) steer hyperparameter choices."""
        return max(1, len(self.ref_nonmembers) // 2)

    def sizes(self) -> list[int]:
        return [len(self.ref_members), len(self.ref_nonmembers), len(self.eval_members),
                len(self.eval_nonmembers)]


def split_records(
    *, members: Records, nonmembers: Records, ref_fraction: float, rng: np.random.Generator
) -> AuditSplit:
    """Each side split at random into reference and evaluated records (both non-empty)."""
    if not 0.0 < ref_fraction < 1.0:
        raise ConfigError(f"ref_fraction must be in (0, 1), got {ref_fraction}")
    if len(members) < 2 or len(nonmembers) < 4:
        raise ConfigError(f"an audit needs at least 2 members and 4 non-members, got "
                          f"{len(members)} and {len(nonmembers)}")

    def halves(records: Records) -> tuple[Records, Records]:
        order = rng.permutation(len(records))
        k = min(len(records) - 1, max(1, round(ref_fraction * len(records))))
        return records.take(np.sort(order[:k])), records.take(np.sort(order[k:]))

    rm, em = halves(members)
    rn, en = halves(nonmembers)
    return AuditSplit(rm, rn, em, en)


@dataclass(frozen=True)
class AttackScores:
    attack: str
    target: str
    ref_members: np.ndarray
    ref_nonmembers: np.ndarray
    eval_members: np.ndarray
    eval_nonmembers: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)
    selection: int | None = None  # leading reference non-members used to choose hyperparameters

    @property
    def selection_nonmembers(self) -> int:
        return self.selection if self.selection is not None else max(1, self.ref_nonmembers.size // 2)


ScoreFn = Callable[[Target, Records], np.ndarray]


def score_split(*, attack: str, target: Target, split: AuditSplit, score: ScoreFn,
                details: dict[str, Any] | None = None) -> AttackScores:
    """Score the whole population in one pass, then cut it back into the split."""
    records, _ = split.population()
    values = np.asarray(score(target, records), dtype=np.float64)
    return cut(attack=attack, target=target.name, split=split, values=values, details=details)


def cut(*, attack: str, target: str, split: AuditSplit, values: np.ndarray,
        details: dict[str, Any] | None = None) -> AttackScores:
    """Population-ordered scores -> the four parts of the split."""
    bounds = np.cumsum([0, *split.sizes()])
    if values.shape != (bounds[-1],):
        raise ConfigError(f"expected {bounds[-1]} scores, got shape {values.shape}")
    parts = [values[bounds[i]:bounds[i + 1]] for i in range(4)]
    return AttackScores(attack, target, *parts, details=dict(details or {}),
                        selection=split.selection_nonmembers)


@dataclass(frozen=True)
class Choice:
    """A hyperparameter chosen on the reference split, and the score direction."""

    key: Any
    sign: float  # +1: the attack's own direction; -1: inverted
    reference_auc: dict[str, float]


def choose_on_reference(split: AuditSplit, scored: dict[Any, np.ndarray], *, orient: bool
                        ) -> Choice:
    """Pick the key whose scores separate the reference members from the selection
    half of the reference non-members best: AUC first, ties (common when the reference AUC is 1) broken by the
    standardised gap between the means. With `orient` the inverted direction
    competes too. The evaluated part of the scores is never looked at."""
    from audits.bounds.roc import auc_with_ci

    n_rm, n_rn = len(split.ref_members), split.selection_nonmembers
    table, best = {}, None
    for key, values in scored.items():
        m, n = values[:n_rm], values[n_rm:n_rm + n_rn]
        auc = auc_with_ci(members=m, nonmembers=n).value
        spread = float(np.sqrt(0.5 * (np.var(m) + np.var(n)))) or 1.0
        gap = float(np.mean(m) - np.mean(n)) / spread
        table[str(key)] = auc
        for sign in ((1.0, -1.0) if orient else (1.0,)):
            strength = (auc if sign > 0 else 1.0 - auc, sign * gap)
            if best is None or strength > best[0]:
                best = (strength, key, sign)
    if best is None:
        raise ConfigError("nothing to choose from")
    return Choice(best[1], best[2], table)
