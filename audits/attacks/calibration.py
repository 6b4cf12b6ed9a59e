"""Per-timestep calibration shared by the loss and SecMI attacks.

A raw loss or t-error is not comparable across timesteps (the loss grows with
t) nor across models (each personal model has its own scale), so a threshold
on raw scores pooled over several models or timesteps mixes scales and loses
most of the signal. Each timestep's scores are therefore standardised by the
mean and standard deviation of the reference records at that timestep (label
free: members and non-members of the reference split together, the only
records the attacker may use to set anything), and the score is the mean of
the standardised scores over the k timesteps that separate the reference
split best, k itself chosen on the reference split. The evaluated records are
never looked at.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audits.attacks.base import AuditSplit, Choice, choose_on_reference


def standardise(values: np.ndarray, split: AuditSplit) -> np.ndarray:
    """(keys, N) population-ordered scores -> each row standardised by its reference records."""
    ref = values[:, :len(split.ref_members) + len(split.ref_nonmembers)]
    mean, std = ref.mean(1, keepdims=True), ref.std(1, keepdims=True)
    return (values - mean) / np.where(std > 0, std, 1.0)


def combine_best(values: np.ndarray, keys: list[Any], split: AuditSplit, *, orient: bool
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """Standardise each key's row, rank the keys by their reference AUC, and return
    the mean of the top-k rows for the k (and, with `orient`, the direction) that
    separates the reference split best, with what was chosen."""
    z = standardise(values, split)
    single = choose_on_reference(split, {i: z[i] for i in range(len(keys))}, orient=orient)
    sign = single.sign
    auc = np.array([single.reference_auc[str(i)] for i in range(len(keys))])
    order = np.argsort(-(sign * (auc - 0.5)), kind="stable")
    combos = {k: sign * z[order[:k]].mean(0) for k in range(1, len(keys) + 1)}
    best: Choice = choose_on_reference(split, combos, orient=False)
    k = int(best.key)
    return combos[k], {"combined": [_plain(keys[i]) for i in order[:k]],
                       "direction": "as the attack's own" if sign > 0 else "inverted",
                       "reference_auc_by_key": {str(_plain(keys[i])): float(auc[i])
                                                for i in range(len(keys))},
                       "reference_auc_by_k": best.reference_auc}


def _plain(key: Any) -> Any:
    return [int(v) for v in key] if isinstance(key, tuple) else int(key)
