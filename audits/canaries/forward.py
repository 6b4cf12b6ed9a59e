"""Forward-noise canary audit: the optimal test on the real clip-and-noise code.

A canary pair x1 = +c u, x0 = -c u (u a unit vector, c >= C, so clipping
maps them to the worst-case pair at distance 2C) is pushed through the
mechanism, `trials` times each. The observer sees every release the
mechanism makes of the record. For the claimed mechanism (one release of
sqrt(abar) clip(x) + sqrt(1 - abar) z) the likelihood-ratio test is a
threshold on s = <y, u> / sqrt(1 - abar), which is N(+-mu/2, 1) with
mu = 2C / sigma; with several releases the test averages their s. The
thresholds are fixed in advance from the claimed mechanism alone (a grid of
claimed false positive rates) and the search over them is paid for by
Bonferroni, so no threshold is chosen on the outcomes it is judged on.

The claim is what a ledger says of the releases the observer sees: the
mechanism's own epsilon, except for the ledger defect, whose broken ledger
(`min_rule_across_runs`) composes two runs on the same records by taking the
smaller epsilon, and so claims one run's epsilon for two runs' releases.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import norm

from audits.attacks.shadows import throwaway_ledger
from audits.bounds.thresholds import EpsilonBound, bonferroni_from_counts
from audits.bounds.verdict import verdict
from audits.canaries.defects import ScaledNoiseSource, clipping_disabled, min_rule_across_runs
from securediff.errors import ConfigError
from securediff.privacy.forward import (
    calibrate_clip,
    calibrate_t0,
    epsilon_exact,
    forward_sigma,
    linear_alphas_cumprod,
    noise_once,
)
from securediff.privacy.ledger import PrivacyLedger
from securediff.rng import RandomSource

FORWARD_DEFECTS: tuple[str, ...] = (
    "no-noise", "noise-10x-smaller", "fresh-noise-every-epoch", "clipping-disabled",
)
AUDIT_NAME = "forward-noise likelihood-ratio test"
# The claimed mechanism is one Gaussian release per record, so its privacy curve
# is Gaussian and the Gaussian-DP epsilon of the bound is a fair reading of it.
GAUSSIAN_CURVE = True
# The ledger's min rule across runs: audited through the forward noise, whose
# likelihood-ratio audit is the strongest here. Needs more trials than the
# mechanism defects (the gap is 4 -> 5.99 at the default claim): about 3e6.
LEDGER_DEFECTS: tuple[str, ...] = ("ledger-min-across-runs",)
EPOCHS = 10  # releases of the fresh-noise-every-epoch defect
RUNS = 2  # runs on the same records that the min-rule ledger composes


@dataclass(frozen=True)
class ForwardSetting:
    clip_norm: float
    t0: int
    abar: np.ndarray
    delta: float

    @property
    def sigma(self) -> float:
        return forward_sigma(float(self.abar[self.t0]))

    @property
    def mu(self) -> float:
        return 2.0 * self.clip_norm / self.sigma

    @property
    def claimed_epsilon(self) -> float:
        return epsilon_exact(sigma=self.sigma, clip_norm=self.clip_norm, delta=self.delta)

    @classmethod
    def calibrated(cls, *, target_epsilon: float, delta: float, T: int = 1000,
                   clip_norm: float = 10.0) -> ForwardSetting:
        """t0 by exact accounting at C = `clip_norm`, then C raised to meet the target
        exactly at that t0 (both with the project's own calibration)."""
        abar = linear_alphas_cumprod(T=T)
        t0 = calibrate_t0(target_epsilon=target_epsilon, clip_norm=clip_norm, delta=delta, abar=abar)
        clip = calibrate_clip(target_epsilon=target_epsilon, t0=t0, delta=delta, abar=abar)
        return cls(clip_norm=clip, t0=t0, abar=abar, delta=delta)

    @classmethod
    def paper(cls, *, t0: int = 690, clip_norm: float = 10.0, delta: float = 1e-5,
              T: int = 1000) -> ForwardSetting:
        return cls(clip_norm=clip_norm, t0=t0, abar=linear_alphas_cumprod(T=T), delta=delta)


Release = Callable[[torch.Tensor, RandomSource, PrivacyLedger, str], list[torch.Tensor]]


def release_for(setting: ForwardSetting, *, defect: str | None) -> Release:
    """Every output the observer sees of records x, by the real `noise_once`."""
    kw: dict[str, Any] = dict(clip_norm=setting.clip_norm, t0=setting.t0, abar=setting.abar)

    def correct(x, source, ledger, data_id):
        return [noise_once(x, source=source, ledger=ledger, data_id=data_id, **kw)]

    def scaled(factor):
        def run(x, source, ledger, data_id):
            return correct(x, ScaledNoiseSource(source, factor=factor), ledger, data_id)
        return run

    def every_epoch(x, source, ledger, data_id):
        return [noise_once(x, source=source, ledger=ledger, data_id=f"{data_id}/epoch-{e}", **kw)
                for e in range(EPOCHS)]

    def unclipped(x, source, ledger, data_id):
        with clipping_disabled():
            return correct(x, source, ledger, data_id)

    def runs(x, source, ledger, data_id):
        # Each run noises the records once, correctly; only the ledger's reading is wrong.
        return [noise_once(x, source=source.child(f"run-{r}"), ledger=ledger,
                           data_id=f"run-{r}/{data_id}", **kw) for r in range(RUNS)]

    table: dict[str | None, Release] = {
        None: correct, "no-noise": scaled(0.0), "noise-10x-smaller": scaled(0.1),
        "fresh-noise-every-epoch": every_epoch, "clipping-disabled": unclipped,
        "ledger-min-across-runs": runs,
    }
    if defect not in table:
        raise ConfigError(f"unknown forward-noise defect {defect!r}; "
                          f"known: {FORWARD_DEFECTS + LEDGER_DEFECTS}")
    return table[defect]


def ledger_claim(setting: ForwardSetting, *, defect: str | None, source: RandomSource) -> float:
    """The epsilon a ledger charged by this release claims for one record (the
    release itself is discarded: only its ledger events count)."""
    if defect not in LEDGER_DEFECTS:
        return setting.claimed_epsilon
    ledger = PrivacyLedger(client_id="audited-client", budget_epsilon=1e12, delta=setting.delta,
                           accountant="exact")
    with min_rule_across_runs():
        release_for(setting, defect=defect)(torch.zeros((1, 1), dtype=torch.float64), source,
                                            ledger, "claim")
        return ledger.epsilon("shared")


def releases_of(defect: str | None) -> int:
    return {"fresh-noise-every-epoch": EPOCHS, "ledger-min-across-runs": RUNS}.get(defect or "", 1)


def threshold_grid(setting: ForwardSetting, *, trials: int, count: int = 32) -> np.ndarray:
    """Thresholds on s whose false positive rate under the claimed mechanism runs
    from 0.45 down to 10 / trials: fixed before any trial is run."""
    rates = np.geomspace(0.45, max(10.0 / trials, 1e-15), num=count)
    return norm.isf(rates) - setting.mu / 2.0


def _at_or_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many values reach each (ascending) threshold, without sorting the values."""
    passed = np.searchsorted(thresholds, values, side="right")  # thresholds <= value
    per = np.bincount(passed, minlength=thresholds.size + 1)
    return per[::-1].cumsum()[::-1][1:]


@dataclass(frozen=True)
class ForwardAudit:
    defect: str | None
    trials: int
    releases: int
    epsilon_claimed: float
    mu_claimed: float
    t0: int
    clip_norm: float
    canary_norm: float
    bound: EpsilonBound
    verdict: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"mechanism": "forward-noise", "defect": self.defect or "none (correct)",
                "audit": AUDIT_NAME, "trials": self.trials,
                "releases": self.releases, "epsilon_claimed": self.epsilon_claimed,
                "mu_claimed": self.mu_claimed, "t0": self.t0, "clip_norm": self.clip_norm,
                "canary_norm": self.canary_norm,
                "epsilon_lower_bound": self.bound.epsilon_lower_bound, "ceiling": self.bound.ceiling,
                "confidence": self.bound.confidence, "method": self.bound.method,
                "verdict": self.verdict, "bound": self.bound.to_dict(), "seconds": self.seconds}


def forward_audit(
    *, setting: ForwardSetting, defect: str | None, trials: int, source: RandomSource,
    confidence: float = 0.95, canary_scale: float = 10.0, dim: int = 1, chunk: int = 1_000_000,
) -> ForwardAudit:
    """Run `trials` canary pairs through the (possibly broken) mechanism and bound epsilon.

    `dim` is the canary's dimension: the optimal test uses only the projection on
    u, the other coordinates carry noise independent of the canary, so 1 suffices
    for the statistics and larger values only cost time.
    """
    if trials < 1 or chunk < 1 or dim < 1:
        raise ConfigError("trials, chunk and dim must be >= 1")
    if canary_scale < 1.0:
        raise ConfigError("canaries must have norm >= C (canary_scale >= 1)")
    started = time.perf_counter()
    release = release_for(setting, defect=defect)
    c = canary_scale * setting.clip_norm
    u = torch.full((dim,), 1.0 / math.sqrt(dim), dtype=torch.float64)
    thresholds = threshold_grid(setting, trials=trials)
    fp = np.zeros(thresholds.size, dtype=np.int64)
    tp = np.zeros(thresholds.size, dtype=np.int64)
    scale = math.sqrt(1.0 - float(setting.abar[setting.t0]))
    done, index = 0, 0
    while done < trials:
        n = min(chunk, trials - done)
        x = torch.cat([c * u.expand(n, dim), -c * u.expand(n, dim)])  # n of x1, then n of x0
        outs = release(x, source.child(f"chunk-{index}"), throwaway_ledger(delta=setting.delta),
                       f"canaries/{index}")
        s = sum((o.double() @ u).numpy() for o in outs) / (scale * len(outs))
        tp += _at_or_above(s[:n], thresholds)
        fp += _at_or_above(s[n:], thresholds)
        done += n
        index += 1
    bound = bonferroni_from_counts(false_positives=fp, false_negatives=trials - tp,
                                   thresholds=thresholds, negatives=trials, positives=trials,
                                   delta=setting.delta, confidence=confidence,
                                   gaussian_curve=GAUSSIAN_CURVE)
    claimed = ledger_claim(setting, defect=defect, source=source.child("claim"))
    return ForwardAudit(
        defect=defect, trials=trials, releases=releases_of(defect),
        epsilon_claimed=claimed, mu_claimed=setting.mu, t0=setting.t0, clip_norm=setting.clip_norm,
        canary_norm=c, bound=bound,
        verdict=verdict(lower_bound=bound.epsilon_lower_bound, ceiling=bound.ceiling, claimed=claimed),
        seconds=time.perf_counter() - started,
    )
