"""Canary audits of the project's own mechanism code (correct or deliberately broken).

- `forward`: canary pairs through `noise_once`, the optimal likelihood-ratio test;
- `dpsgd`: white-box Dirac gradient canaries through `DPSGD`, one-run bound;
- `independent`: the rates bound of those canaries as independent trials;
- `blackbox`: input canaries in a training run, scored on the final model;
- `defects`: the broken mechanisms, built by wrapping the real ones.
"""

from audits.canaries.blackbox import BlackBoxAudit, blackbox_canary_audit
from audits.canaries.dpsgd import DPSGD_DEFECTS, DPSGDAudit, DPSGDSetting, dpsgd_whitebox_audit
from audits.canaries.forward import (
    FORWARD_DEFECTS,
    LEDGER_DEFECTS,
    ForwardAudit,
    ForwardSetting,
    forward_audit,
)

__all__ = [
    "DPSGD_DEFECTS",
    "FORWARD_DEFECTS",
    "LEDGER_DEFECTS",
    "BlackBoxAudit",
    "DPSGDAudit",
    "DPSGDSetting",
    "ForwardAudit",
    "ForwardSetting",
    "blackbox_canary_audit",
    "dpsgd_whitebox_audit",
    "forward_audit",
]
