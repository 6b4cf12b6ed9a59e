"""Privacy audits against trained models (membership inference, canaries,
empirical epsilon lower bounds). Depends on `securediff`; nothing in the core
depends on it.

- `audits.attacks`: loss, SecMI, PIA, LiRA (offline / online) and memorization
  checks against one denoiser segment (`Target`), members against holdout;
- `audits.bounds`: Clopper–Pearson epsilon bounds with honest thresholds, the
  Gaussian-DP mu bound, the one-run bound of Steinke et al. (2023), each with
  its ceiling, and the verdict against a claim;
- `audits.canaries`: canary audits of the project's own mechanism code, and
  the deliberately broken mechanisms (wrappers of the real ones); their
  trials are independent, so they give verdicts;
- `audits.selfcheck`: do the audits flag broken mechanisms and only those;
- `audits.runs` / `audits.report`: audit a finished run directory and write
  `audit/audit.json`, `audit/audit.md` and `audit/roc.png`; membership
  attacks on one trained model are measurements, not verdicts.
"""
