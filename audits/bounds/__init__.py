"""Epsilon lower bounds from audits, each with the ceiling its trial count allows.

- `rates`: Clopper–Pearson bounds and eps >= ln((1 - delta - FNR) / FPR);
- `thresholds`: honest threshold choice (held-out split or Bonferroni);
- `gdp`: the Gaussian-DP mu bound and its epsilon;
- `one_run`: Steinke, Nasr & Jagielski (2023), with its delta term;
- `roc`: AUC with a DeLong interval, ROC curves, TPR at a fixed FPR;
- `verdict`: violation / consistent / uninformative / no-claim for independent
  trials; measurement otherwise.
"""

from audits.bounds.rates import clopper_pearson, epsilon_ceiling, epsilon_from_counts
from audits.bounds.thresholds import EpsilonBound, bonferroni_bound, heldout_bound
from audits.bounds.verdict import verdict

__all__ = [
    "EpsilonBound",
    "bonferroni_bound",
    "clopper_pearson",
    "epsilon_ceiling",
    "epsilon_from_counts",
    "heldout_bound",
    "verdict",
]
