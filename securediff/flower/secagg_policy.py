"""A node's minimums for a secagg round, checked against the round's parameters.

The aggregator names secagg's parameters in each round's set-up, and with them
the assumptions its graph was planned under. A node does not take that word: it
resolves, for the round's n, the plan of the documented analysis
(`protocols/secagg/params.py`) under its OWN assumptions (the fraction of
clients it assumes collude with the aggregator, the security level it wants)
and refuses a round

- without the consistency round, unless the node allows that;
- whose `min_contributors` (distributed DP's noise floor) is below the node's;
- whose resolved degree or threshold is below the node's plan for that n;
- whose (degree, threshold) fails the analysis' security bound under the
  node's assumptions (a larger degree at the same threshold can).

Each refusal names the parameter, so an operator knows which setting to raise.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.errors import ProtocolInputError
from protocols.secagg.params import SecAggParams, _allowed, plan_graph
from securediff.errors import ConfigError


@dataclass(frozen=True)
class SecAggMinimums:
    require_consistency_check: bool = True
    collusion_fraction: float = 0.0  # DESIGN.md's default threat model: no colluding client
    security_bits: int = 40
    min_contributors: int = 0

    def __post_init__(self) -> None:
        if type(self.min_contributors) is not int or self.min_contributors < 0:
            raise ConfigError("node config min-contributors must be an int >= 0")
        _ = self.assumptions  # the analysis validates the fraction and the bits

    @property
    def assumptions(self) -> SecAggParams:
        """The analysis' parameters under this node's assumptions (other settings at
        the analysis' defaults: dropout tolerance 0.2, correctness 20 bits)."""
        try:
            return SecAggParams(collusion_fraction=self.collusion_fraction,
                                security_bits=self.security_bits)
        except ProtocolInputError as exc:
            raise ConfigError(f"node config: {exc} (collusion-fraction, "
                              "secagg-security-bits)") from None

    def refusal(self, params: SecAggParams, n: int) -> str | None:
        """Why a round of `n` clients with `params` is below these minimums; None if not."""
        if not params.consistency_check and self.require_consistency_check:
            return ("consistency_check: off, and this node requires the consistency round "
                    "(allow-no-consistency-check = false)")
        if params.min_contributors < self.min_contributors:
            return (f"min_contributors: {params.min_contributors}, below this node's "
                    f"min-contributors = {self.min_contributors}")
        assumed = self.assumptions
        try:
            ours = plan_graph(n, assumed)
        except ProtocolInputError as exc:
            return (f"collusion-fraction: no secagg round of {n} clients is secure under this "
                    f"node's collusion-fraction = {self.collusion_fraction} ({exc})")
        try:
            theirs = plan_graph(n, params)
        except ProtocolInputError as exc:
            return f"degree/threshold: the round's own analysis refuses them ({exc})"
        under = (f"the analysis' plan for n={n} under this node's collusion-fraction = "
                 f"{self.collusion_fraction}, secagg-security-bits = {self.security_bits}")
        if theirs.degree < ours.degree:
            return f"degree: {theirs.degree}, below {ours.degree}, {under}"
        if theirs.threshold < ours.threshold:
            return f"threshold: {theirs.threshold}, below {ours.threshold}, {under}"
        why = _allowed(n, theirs.degree, theirs.threshold, assumed)
        if why is not None:
            return f"degree/threshold: {why} (this node's assumptions)"
        return None
