"""The verdict of one audit: a lower bound read against the claim and the ceiling.

- "violation": the lower bound exceeds the claimed epsilon (at the stated
  confidence, the mechanism is not as private as claimed).
- "uninformative": the ceiling is at or below the claim, so no outcome of
  this experiment could have exposed a violation; it says nothing either way
  and is never reported as "consistent".
- "consistent": the experiment could have certified more than the claim and
  did not.
- "no-claim": nothing is claimed for the artefact (e.g. a non-private model);
  the bound is reported as a measurement.
"""

from __future__ import annotations

import math

VIOLATION = "violation"
CONSISTENT = "consistent"
UNINFORMATIVE = "uninformative"
NO_CLAIM = "no-claim"
# Strongest first: the order in which verdicts of several audits are summarised.
VERDICT_ORDER: tuple[str, ...] = (VIOLATION, CONSISTENT, UNINFORMATIVE, NO_CLAIM)


def verdict(*, lower_bound: float, ceiling: float, claimed: float | None) -> str:
    if claimed is None or not math.isfinite(claimed):
        return NO_CLAIM
    if lower_bound > claimed:
        return VIOLATION
    if ceiling <= claimed:
        return UNINFORMATIVE
    return CONSISTENT


def strongest(verdicts: list[str]) -> str:
    """The summary verdict of several audits (violation wins, then consistent...)."""
    for name in VERDICT_ORDER:
        if name in verdicts:
            return name
    return NO_CLAIM
