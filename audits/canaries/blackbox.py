"""Black-box canary audit on the final model (Steinke et al. 2023, black-box).

m canary slots; each holds the canary x_i or, with probability 1/2, its
counterpart x'_i (replace-one, the relation of the forward-noise mechanism;
with no counterparts a slot is simply empty: add/remove, DP-SGD's). The
model is trained once, by the caller's pipeline, on the base records plus
the slots' contents; the auditor then sees only the final model and scores
each slot by a membership score (canary minus counterpart). Guesses and the
bound are those of the white-box audit (`audits.canaries.dpsgd.one_run_bound`)
with the tight rule's count fixed as a fraction of m (no claim simulation is
possible without a model of the final-model scores).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from audits.attacks.target import Records, Target
from audits.bounds.verdict import verdict
from audits.canaries.dpsgd import OneRunResult, guess_rules, one_run_bound
from securediff.errors import ConfigError
from securediff.rng import RandomSource


@dataclass(frozen=True)
class BlackBoxAudit:
    mechanism: str
    defect: str | None
    epsilon_claimed: float
    relation: str
    result: OneRunResult
    verdict: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"mechanism": self.mechanism, "defect": self.defect or "none (correct)",
                "audit": "black-box one-run on the final model", "relation": self.relation,
                "epsilon_claimed": self.epsilon_claimed, "canaries": self.result.canaries,
                "epsilon_lower_bound": self.result.epsilon_lower_bound,
                "ceiling": self.result.ceiling, "confidence": self.result.confidence,
                "method": self.result.to_dict()["method"], "verdict": self.verdict,
                "one_run": self.result.to_dict(), "seconds": self.seconds}


def blackbox_canary_audit(
    *, mechanism: str, defect: str | None, canaries: Records, counterparts: Records | None,
    base: Records, train: Callable[[Records], Target],
    score: Callable[[Target, Records], np.ndarray], claimed_epsilon: float, delta: float,
    source: RandomSource, confidence: float = 0.95, per_side_fraction: float = 0.05,
) -> BlackBoxAudit:
    m = len(canaries)
    if m < 2 or (counterparts is not None and len(counterparts) != m):
        raise ConfigError("need at least 2 canaries and one counterpart per canary")
    if not 0.0 < per_side_fraction < 0.5:
        raise ConfigError(f"per_side_fraction must be in (0, 0.5), got {per_side_fraction}")
    started = time.perf_counter()
    chosen = source.bernoulli(0.5, m)
    parts = [base, canaries.take(np.flatnonzero(chosen))]
    if counterparts is not None:
        parts.append(counterparts.take(np.flatnonzero(~chosen)))
    target = train(Records.concat(parts))
    scores = np.asarray(score(target, canaries), dtype=np.float64)
    if counterparts is not None:
        scores = scores - np.asarray(score(target, counterparts), dtype=np.float64)
    per_side = max(1, round(per_side_fraction * m))
    result = one_run_bound(scores=scores, included=chosen, rules=guess_rules(m, per_side=per_side),
                           delta=delta, confidence=confidence)
    return BlackBoxAudit(
        mechanism=mechanism, defect=defect, epsilon_claimed=claimed_epsilon,
        relation="replace-one" if counterparts is not None else "add/remove", result=result,
        verdict=verdict(lower_bound=result.epsilon_lower_bound, ceiling=result.ceiling,
                        claimed=claimed_epsilon),
        seconds=time.perf_counter() - started,
    )
