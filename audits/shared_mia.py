"""The cheapest meaningful membership-inference check of a run's shared
denoiser, for experiment tables: the loss attack (calibrated per timestep, the
timesteps chosen on the reference split) against every client's members and holdout pooled, read
against the epsilon the ledger claims for the shared artefact.

The full audit (all attacks, personal models) is `securediff audit run`; this
writes the same RUN_DIR/audit/ files for the one attack it runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from audits.report import write_report
from audits.runs import AuditOptions, audit_run
from securediff.errors import ConfigError
from securediff.rng import RandomSource


def shared_model_mia(run_dir: Path, *, source: RandomSource, device: str = "cpu",
                     draws: int = 4) -> dict[str, Any]:
    """AUC of the loss attack on the shared denoiser, with the audit's epsilon ceiling
    (the largest lower bound this many records can certify), the claim, and the
    largest AUC the claim allows (`dp_auc_ceiling`).

    A run without a shared denoiser (`local`: nothing leaves a client) gets
    `auc: None` and the reason.
    """
    options = AuditOptions(attacks=("loss",), targets="shared", draws=draws, device=device)
    try:
        result, reports = audit_run(Path(run_dir), options=options, source=source)
    except ConfigError as exc:
        if "no shared denoiser" not in str(exc):
            raise
        return {"attack": "loss", "auc": None, "reason": str(exc)}
    write_report(Path(run_dir), result, reports)
    target = result["targets"][0]
    row = target["attacks"][0]
    return {"attack": "loss", "target": target["target"], "segment": target["segment"],
            "members": target["members"], "nonmembers": target["nonmembers"],
            "auc": row["auc"], "auc_ci": row["auc_ci"], "ceiling": row["ceiling"],
            "epsilon_claimed": row["epsilon_claimed"], "epsilon_lower_bound": row["epsilon_lower_bound"],
            "dp_auc_ceiling": dp_auc_ceiling(epsilon=row["epsilon_claimed"], delta=result["delta"]),
            "verdict": row["verdict"], "seconds": result["seconds"]}


def dp_auc_ceiling(*, epsilon: float | None, delta: float, grid: int = 200_001) -> float | None:
    """The largest ROC AUC any membership test can reach against an (epsilon, delta)-DP
    mechanism: the area under the DP trade-off bound
    TPR <= min(1, e^eps FPR + delta, 1 - e^-eps (1 - delta - FPR))
    (Kairouz et al. 2015), integrated on a uniform FPR grid. None without a claim."""
    if epsilon is None:
        return None
    import numpy as np

    if epsilon < 0 or not 0 <= delta < 1:
        raise ConfigError(f"need epsilon >= 0 and delta in [0, 1), got {epsilon}, {delta}")
    fpr = np.linspace(0.0, 1.0, grid)
    e = math.exp(min(epsilon, 700.0))
    tpr = np.minimum.reduce([np.ones_like(fpr), e * fpr + delta, 1.0 - (1.0 - delta - fpr) / e])
    return float(np.trapezoid(np.clip(tpr, 0.0, 1.0), fpr))
