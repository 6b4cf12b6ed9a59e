"""Membership-inference attacks on diffusion denoisers, and memorization checks.

Every attack scores records (higher = member) against one `Target` segment:
`loss` (Hu & Pang 2023; Matsumoto et al. 2023), `secmi` (Duan et al. 2023),
`pia` (Kong et al. 2024), `lira-offline` / `lira-online` (Carlini et al.
2022); `memorization` compares released samples with members and holdout.
"""

from audits.attacks.base import AttackScores, AuditSplit, split_records
from audits.attacks.evaluate import AttackReport, evaluate_attack
from audits.attacks.target import Records, Target

ATTACKS: tuple[str, ...] = ("loss", "secmi", "pia", "lira-offline", "lira-online", "memorization")

__all__ = ["ATTACKS", "AttackReport", "AttackScores", "AuditSplit", "Records", "Target",
           "evaluate_attack", "split_records"]
