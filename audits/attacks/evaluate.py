"""From an attack's scores to its report: AUC, ROC, TPR at low FPR, the
epsilon lower bound (threshold chosen on the reference split), its ceiling,
and the FPR calibration of thresholds set on the reference split.

The members and non-members are records of one trained model: their
outcomes are not independent trials (every score comes from the same
model, trained on all the members at once), so the Clopper–Pearson bound is
reported as a measurement, never as a verdict (`MEASUREMENT`). Verdicts come
only from designs with independent trials (`audits.canaries`). The
Gaussian-DP epsilon is left out: a trained model's privacy curve is not
Gaussian in general."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import betabinom

from audits.attacks.base import AttackScores
from audits.bounds.roc import AUC, RateAt, auc_with_ci, roc_curve, tpr_at_fpr
from audits.bounds.thresholds import EpsilonBound, heldout_bound
from audits.bounds.verdict import MEASUREMENT

REPORTED_FPRS: tuple[float, ...] = (0.01, 0.001)
NOMINAL_FPRS: tuple[float, ...] = (0.5, 0.2, 0.1)


@dataclass(frozen=True)
class Calibration:
    """A threshold set at rate `nominal` on the reference non-members kept out of
    every hyperparameter choice (the k-th largest of their n scores, reference
    rate k/n), and the FPR it has on
    the evaluated non-members. If the attack treats all non-members alike the
    count above it is beta-binomial (n_eval, k, n - k + 1) exactly (the
    threshold's own FPR is Beta(k, n - k + 1)); [low, high] is that law's
    central interval at the audit's confidence, as rates."""

    nominal: float
    reference_rate: float
    threshold: float
    observed: float
    low: float
    high: float

    @property
    def within(self) -> bool:
        return self.low <= self.observed <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"nominal": self.nominal, "reference_rate": self.reference_rate,
                "threshold": self.threshold, "observed": self.observed, "low": self.low,
                "high": self.high, "within": self.within}


def fpr_calibration(scores: AttackScores, *, confidence: float,
                    nominal: tuple[float, ...] = NOMINAL_FPRS) -> list[Calibration]:
    held = scores.ref_nonmembers[scores.selection_nonmembers:]
    ref = np.sort(held if held.size else scores.ref_nonmembers)[::-1]
    ev = scores.eval_nonmembers
    tail = (1.0 - confidence) / 2.0
    out = []
    for rate in nominal:
        k = min(ref.size, max(1, math.ceil(rate * ref.size)))
        threshold = float(ref[k - 1])
        law = betabinom(ev.size, k, ref.size - k + 1)
        out.append(Calibration(rate, k / ref.size, threshold, float((ev >= threshold).mean()),
                               float(law.ppf(tail)) / ev.size, float(law.isf(tail)) / ev.size))
    return out


@dataclass(frozen=True)
class AttackReport:
    attack: str
    target: str
    members: int
    nonmembers: int
    auc: AUC
    tpr_at_fpr: tuple[RateAt, ...]
    bound: EpsilonBound
    epsilon_claimed: float | None
    accountant: str | None
    verdict: str
    calibration: tuple[Calibration, ...]
    roc: tuple[np.ndarray, np.ndarray] = field(repr=False)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def bound_above_claim(self) -> bool | None:
        """Whether the measured bound exceeds the claim: worth a look, not a verdict."""
        claimed = self.epsilon_claimed
        if claimed is None or not math.isfinite(claimed):
            return None
        return bool(self.bound.epsilon_lower_bound > claimed)

    def to_dict(self) -> dict[str, Any]:
        claimed = self.epsilon_claimed
        return {
            "attack": self.attack, "target": self.target, "members": self.members,
            "nonmembers": self.nonmembers,
            "epsilon_claimed": claimed if claimed is not None and math.isfinite(claimed) else None,
            "accountant": self.accountant,
            "epsilon_lower_bound": self.bound.epsilon_lower_bound, "ceiling": self.bound.ceiling,
            "method": self.bound.method, "confidence": self.bound.confidence,
            "auc": self.auc.value, "auc_ci": [self.auc.low, self.auc.high],
            "tpr_at_fpr": {f"{r.fpr:g}": r.value for r in self.tpr_at_fpr},
            "tpr_at_fpr_reason": {f"{r.fpr:g}": r.reason for r in self.tpr_at_fpr if r.reason},
            "verdict": self.verdict, "bound_above_claim": self.bound_above_claim,
            "bound": self.bound.to_dict(),
            "fpr_calibration": [c.to_dict() for c in self.calibration],
            "details": self.details,
        }


def evaluate_attack(scores: AttackScores, *, claimed: float | None, accountant: str | None,
                    delta: float, confidence: float) -> AttackReport:
    em, en = scores.eval_members, scores.eval_nonmembers
    bound = heldout_bound(select_members=scores.ref_members, select_nonmembers=scores.ref_nonmembers,
                          eval_members=em, eval_nonmembers=en, delta=delta, confidence=confidence)
    return AttackReport(
        attack=scores.attack, target=scores.target, members=int(em.size), nonmembers=int(en.size),
        auc=auc_with_ci(members=em, nonmembers=en, confidence=confidence),
        tpr_at_fpr=tuple(tpr_at_fpr(members=em, nonmembers=en, fpr=f) for f in REPORTED_FPRS),
        bound=bound, epsilon_claimed=claimed, accountant=accountant,
        verdict=MEASUREMENT,
        calibration=tuple(fpr_calibration(scores, confidence=confidence)),
        roc=roc_curve(members=em, nonmembers=en), details=scores.details,
    )
