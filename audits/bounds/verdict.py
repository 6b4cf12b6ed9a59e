"""The verdict of one audit: a lower bound read against the claim and the ceiling.

Verdicts are given only for designs whose trials are independent (canary
pairs, one-run audits with independent inclusion); membership attacks on one
trained model are measurements (`MEASUREMENT`), see `audits.attacks.evaluate`.

- "violation": the lower bound exceeds the claimed epsilon (at the stated
  confidence, the mechanism is not as private as claimed).
- "uninformative": the experiment could not have certified more than the
  claim, so it says nothing either way and is never reported as
  "consistent". Either its ceiling (the bound of a detector that never errs)
  is at or below the claim, or its bound is 0: the detector showed no power
  at all at these trials (a blind detector certifies 0 against any mechanism,
  a broken one included), so its silence is no evidence.
- "consistent": the experiment could have certified more than the claim, its
  detector showed power (bound above 0), and it did not exceed the claim.
- "no-claim": nothing is claimed for the artefact (e.g. a non-private model);
  the bound is reported as a measurement.
- "measurement": the trials are not independent (members and non-members of
  one trained model), so the bound is reported but decides nothing.
"""

from __future__ import annotations

import math

VIOLATION = "violation"
CONSISTENT = "consistent"
UNINFORMATIVE = "uninformative"
NO_CLAIM = "no-claim"
MEASUREMENT = "measurement"
# Strongest first: the order in which verdicts of several audits are summarised.
VERDICT_ORDER: tuple[str, ...] = (VIOLATION, CONSISTENT, UNINFORMATIVE, NO_CLAIM, MEASUREMENT)
# What each verdict means, for reports (audit.md, the CLI).
EXPLANATIONS: dict[str, str] = {
    VIOLATION: "the lower bound exceeds the claimed epsilon: at the stated confidence the "
               "mechanism is not as private as claimed",
    CONSISTENT: "the experiment could have certified more than the claim, its detector showed "
                "power (a bound above 0), and the bound stayed at or below the claim",
    UNINFORMATIVE: "cannot detect at these trials: the ceiling (a detector that never errs) is "
                   "at or below the claim, or the bound is 0 (the detector showed no power), so "
                   "the audit says nothing either way",
    NO_CLAIM: "nothing is claimed for this artefact; the bound is a measurement",
    MEASUREMENT: "members and non-members of one trained model are not independent trials, so "
                 "the bound is a measurement and decides no verdict",
}


def verdict(*, lower_bound: float, ceiling: float, claimed: float | None) -> str:
    if claimed is None or not math.isfinite(claimed):
        return NO_CLAIM
    if lower_bound > claimed:
        return VIOLATION
    if ceiling <= claimed or not lower_bound > 0.0:
        return UNINFORMATIVE
    return CONSISTENT


def strongest(verdicts: list[str]) -> str:
    """The summary verdict of several audits (violation wins, then consistent...)."""
    for name in VERDICT_ORDER:
        if name in verdicts:
            return name
    return NO_CLAIM
