"""DP-SGD white-box canary audit with Dirac canaries.

The auditor instruments one client: its model gets a canary layer with one
coordinate per canary (`CanaryInstrumented`), and m gradient canaries, each
included in the client's data independently with probability 1/2, are
records whose per-sample gradient is a Dirac on their own coordinate, of
norm `canary_scale` x C (>= C, so a correct implementation clips it to
exactly C). The client then runs the project's real `DPSGD` (per-sample
gradients by its fused engine, `securediff.privacy.per_sample`; clipping;
noise from the injected source; Poisson batches from `poisson_sample`) on its
real records plus the included canaries.
The observer sees every noisy step: after each step it reads the noisy
gradient at the canary coordinates. Per canary it scores the likelihood
ratio of the claimed mechanism: the sum of its normalised coordinates when
step of the claimed mechanism, log(1 - q + q e^((2g - 1) / (2 sigma^2))) summed over
steps (for q = 1 that is (2g - 1) / (2 sigma^2)). Two guess rules are fixed
before the run and paid for by a weighted Bonferroni split of the error
(`RULE_SHARES`: 80% to the first, 20% to the second): "in" for the top k and "out" for
the bottom k scores, k the count that simulating the claimed mechanism says
is best; and the same with k = m/2 - 2 sqrt(m), which guesses almost every
canary and abstains only where the number included may fall (4 binomial
standard deviations): what a broken mechanism that separates the canaries
perfectly needs in order to show a bound near the ceiling of m guesses.
The same scores also give the rates bound of the canaries as independent
trials (`audits.canaries.independent`); each bound gets half the error
budget, and the larger is the audit's.

Defects beyond the noise and clipping ones: per-copy clipping under noise
multiplicity K (`PerCopyClippedDPSGD`), and an accountant told a sample rate
`UNDERSTATED_RATE_FACTOR` times smaller than the Poisson sampling uses (the
noise is calibrated, the ledger charged and the observer's test set for the
told rate; the batches are drawn at the true one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from audits.bounds import one_run
from audits.bounds.thresholds import EpsilonBound
from audits.bounds.verdict import verdict
from audits.canaries.defects import PerCopyClippedDPSGD, ScaledNoiseSource, UnclippedDPSGD
from audits.canaries.independent import claimed_thresholds, rates_bound
from securediff.diffusion.loss import diffusion_loss
from securediff.diffusion.schedule import NoiseSchedule
from securediff.errors import ConfigError
from securediff.models.init import build
from securediff.models.unet import UNet, UNetSpec
from securediff.privacy.accountants import calibrate_noise_multiplier, dpsgd_epsilon
from securediff.privacy.dpsgd import DPSGD, poisson_sample
from securediff.privacy.ledger import PrivacyLedger
from securediff.rng import RandomSource

AUDIT_NAME = "dp-sgd white-box Dirac canaries (one-run and rates bounds)"
DPSGD_DEFECTS: tuple[str, ...] = ("no-noise", "noise-10x-smaller", "clipping-disabled",
                                   "per-copy-clipping", "sample-rate-understated")
# The accountant of the "sample-rate-understated" defect is told q / this (full
# batches accounted as batches of 1/32 of the data): at q = 1 and 16 steps
# calibrated to epsilon 4 the true epsilon is 44.5, and each canary's 16
# observations separate it from the excluded ones (mu about 6).
UNDERSTATED_RATE_FACTOR = 32.0
GUESS_FRACTIONS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
# Error budget of the two guess rules (weighted Bonferroni): the tight rule for a
# correct mechanism gets most of it; the wide rule needs little to reach its ceiling.
RULE_SHARES: tuple[float, float] = (0.8, 0.2)


class CanaryInstrumented(nn.Module):
    """The client's model and the auditor's canary layer, trained as one module."""

    def __init__(self, model: nn.Module, canaries: int) -> None:
        super().__init__()
        self.model = model
        self.canary = nn.Linear(canaries, 1, bias=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, onehot: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x, t, y), self.canary(onehot)


@dataclass(frozen=True)
class DPSGDSetting:
    target_epsilon: float
    delta: float
    sample_rate: float
    steps: int
    max_grad_norm: float = 1.0
    accountant: str = "pld"
    noise_multiplicity: int = 1

    @property
    def noise_multiplier(self) -> float:
        return _calibrated(self.target_epsilon, self.sample_rate, self.steps, self.delta,
                           self.accountant)

    def claimed_epsilon(self, sigma: float) -> float:
        return dpsgd_epsilon(noise_multiplier=sigma, sample_rate=self.sample_rate,
                             steps=self.steps, delta=self.delta, accountant=self.accountant)


@lru_cache(maxsize=64)
def _calibrated(target: float, q: float, steps: int, delta: float, accountant: str) -> float:
    # A bisection of accountant calls (seconds at q < 1): several rows share a setting.
    return calibrate_noise_multiplier(target_epsilon=target, sample_rate=q, steps=steps,
                                      delta=delta, accountant=accountant)


def observer_scores(g: np.ndarray, *, sigma: float, q: float) -> np.ndarray:
    """Claimed-mechanism log-likelihood ratio (in vs out) per canary from normalised
    observations g (steps, m), each N(in batch, sigma^2) under the claim."""
    z = (2.0 * g - 1.0) / (2.0 * sigma * sigma)
    if q >= 1.0:
        return z.sum(0)
    return np.logaddexp(np.log1p(-q), np.log(q) + z).sum(0)


def choose_guesses(*, canaries: int, sigma: float, setting: DPSGDSetting, confidence: float,
                   rng: np.random.Generator, reps: int = 3) -> int:
    """Guesses per side that maximise the mean bound when the claimed mechanism is
    simulated (uses the claim only, never the audited run)."""
    q, s = setting.sample_rate, setting.steps
    best, best_k = -1.0, 1
    sims = []
    for _ in range(reps):
        inc = rng.uniform(size=canaries) < 0.5
        in_batch = (rng.uniform(size=(s, canaries)) < q) & inc[None]
        sims.append((observer_scores(in_batch + sigma * rng.standard_normal((s, canaries)),
                                     sigma=sigma, q=q), inc))
    for frac in GUESS_FRACTIONS:
        k = max(1, round(frac * canaries))
        if 2 * k > canaries:
            continue
        bounds = []
        for scores, inc in sims:
            gs = one_run.guess(scores=scores, included=inc, top=k, bottom=k)
            bounds.append(one_run.epsilon_lower_bound(
                canaries=canaries, guesses=gs.guesses, correct=gs.correct, delta=setting.delta,
                confidence=1.0 - (1.0 - confidence) * RULE_SHARES[0]))
        if np.mean(bounds) > best:
            best, best_k = float(np.mean(bounds)), k
    return best_k


@dataclass(frozen=True)
class OneRunResult:
    canaries: int
    included: int
    guesses: tuple[one_run.Guesses, ...]
    bounds: tuple[float, ...]
    epsilon_lower_bound: float
    ceiling: float
    confidence: float
    delta: float

    def to_dict(self) -> dict[str, Any]:
        return {"canaries": self.canaries, "included": self.included,
                "guesses": [g.to_dict() for g in self.guesses], "bounds": list(self.bounds),
                "epsilon_lower_bound": self.epsilon_lower_bound, "ceiling": self.ceiling,
                "confidence": self.confidence, "delta": self.delta,
                "method": f"one-run (Steinke et al. 2023), weighted Bonferroni over "
                          f"{len(self.guesses)} guess rules fixed in advance"}


def guess_rules(canaries: int, *, per_side: int) -> list[tuple[int, int, float]]:
    """(top, bottom, share of the error budget) of the two rules: k per side, and
    nearly every canary."""
    wide = max(1, int(canaries / 2 - 2 * np.sqrt(canaries)))
    return [(per_side, per_side, RULE_SHARES[0]), (wide, wide, RULE_SHARES[1])]


def one_run_bound(*, scores: np.ndarray, included: np.ndarray,
                  rules: list[tuple[int, int, float]], delta: float, confidence: float
                  ) -> OneRunResult:
    """The one-run bound, best of several guess rules fixed in advance; rule i runs at
    confidence 1 - share_i (1 - confidence), shares summing to at most 1 (Bonferroni)."""
    if not rules or sum(r[2] for r in rules) > 1.0 + 1e-12 or min(r[2] for r in rules) <= 0:
        raise ConfigError("guess rules need positive shares of the error budget summing to <= 1")
    m = int(scores.size)
    guesses, bounds, ceilings = [], [], []
    for top, bottom, share in rules:
        level = 1.0 - (1.0 - confidence) * share
        g = one_run.guess(scores=scores, included=included, top=top, bottom=bottom)
        guesses.append(g)
        bounds.append(one_run.epsilon_lower_bound(canaries=m, guesses=g.guesses, correct=g.correct,
                                                  delta=delta, confidence=level))
        ceilings.append(one_run.epsilon_lower_bound(canaries=m, guesses=g.guesses,
                                                    correct=g.guesses, delta=delta, confidence=level))
    ceiling = max(ceilings)
    return OneRunResult(canaries=m, included=int(np.sum(included)), guesses=tuple(guesses),
                        bounds=tuple(bounds), epsilon_lower_bound=max(bounds), ceiling=ceiling,
                        confidence=confidence, delta=delta)


@dataclass(frozen=True)
class DPSGDAudit:
    defect: str | None
    epsilon_claimed: float
    noise_multiplier: float
    sample_rate: float  # what the accountant was told
    sample_rate_used: float  # what the Poisson sampling used
    epsilon_at_rate_used: float  # the accountant's epsilon at the rate used (the truth, if correct)
    noise_multiplicity: int
    steps: int
    canary_norm: float
    result: OneRunResult
    rates: EpsilonBound  # the same canaries as independent trials (`audits.canaries.independent`)
    confidence: float  # of the larger bound: each of the two holds at 1 - (1 - this) / 2
    verdict: str
    seconds: float

    @property
    def epsilon_lower_bound(self) -> float:
        return max(self.result.epsilon_lower_bound, self.rates.epsilon_lower_bound)

    @property
    def ceiling(self) -> float:
        return max(self.result.ceiling, self.rates.ceiling)

    def to_dict(self) -> dict[str, Any]:
        return {"mechanism": "dp-sgd", "defect": self.defect or "none (correct)",
                "audit": AUDIT_NAME,
                "epsilon_claimed": self.epsilon_claimed, "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate, "sample_rate_used": self.sample_rate_used,
                "epsilon_at_rate_used": self.epsilon_at_rate_used,
                "noise_multiplicity": self.noise_multiplicity, "steps": self.steps,
                "canary_norm": self.canary_norm, "canaries": self.result.canaries,
                "epsilon_lower_bound": self.epsilon_lower_bound, "ceiling": self.ceiling,
                "confidence": self.confidence,
                "method": "the larger of the one-run bound and the rates bound over the canaries "
                          "as independent trials, each at half the error budget",
                "verdict": self.verdict, "one_run": self.result.to_dict(),
                "rates": self.rates.to_dict(), "seconds": self.seconds}


def dpsgd_whitebox_audit(
    *, setting: DPSGDSetting, defect: str | None, canaries: int, real_x: torch.Tensor,
    real_y: torch.Tensor, spec: UNetSpec, schedule: NoiseSchedule, source: RandomSource,
    confidence: float = 0.95, canary_scale: float = 10.0, lr: float = 1e-3,
) -> DPSGDAudit:
    if defect is not None and defect not in DPSGD_DEFECTS:
        raise ConfigError(f"unknown DP-SGD defect {defect!r}; known: {DPSGD_DEFECTS}")
    if canaries < 2 or canary_scale < 1.0:
        raise ConfigError("need at least 2 canaries of norm >= C (canary_scale >= 1)")
    started = time.perf_counter()
    used_rate = setting.sample_rate
    if defect == "sample-rate-understated":
        setting = replace(setting, sample_rate=used_rate / UNDERSTATED_RATE_FACTOR)
    sigma, c = setting.noise_multiplier, setting.max_grad_norm
    rng = source.child("auditor").numpy_generator()
    # Two bounds on the same canaries, each at half the error budget (Bonferroni).
    half = 1.0 - (1.0 - confidence) / 2.0
    per_side = choose_guesses(canaries=canaries, sigma=sigma, setting=setting,
                              confidence=half, rng=rng)
    # An excluded canary's observation under the claim is noise alone, whatever q is.
    thresholds = claimed_thresholds(
        canaries=canaries, excluded_scores=lambda n: observer_scores(
            sigma * rng.standard_normal((setting.steps, n)), sigma=sigma, q=setting.sample_rate))
    included = source.child("inclusion").bernoulli(0.5, canaries)
    ids = np.flatnonzero(included)
    n_real = int(real_x.shape[0])
    x = torch.cat([real_x.float(), torch.zeros((ids.size, *real_x.shape[1:]))])
    y = torch.cat([real_y.long(), torch.zeros(ids.size, dtype=torch.long)])
    cid = torch.cat([torch.full((n_real,), -1, dtype=torch.long), torch.from_numpy(ids)])
    gen = source.child("init").torch_generator()
    model = build(lambda: CanaryInstrumented(UNet(spec), canaries), generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    ledger = PrivacyLedger(client_id="audited-client", budget_epsilon=setting.target_epsilon * 1.001,
                           delta=setting.delta, accountant=setting.accountant)
    noise_source = source.child("dpsgd-noise")
    if defect in ("no-noise", "noise-10x-smaller"):
        noise_source = ScaledNoiseSource(noise_source, factor=0.0 if defect == "no-noise" else 0.1)
    cls = {"clipping-disabled": UnclippedDPSGD, "per-copy-clipping": PerCopyClippedDPSGD
           }.get(defect or "", DPSGD)
    ebs = setting.sample_rate * x.shape[0]
    dpsgd = cls(model=model, optimizer=optimizer, max_grad_norm=c, noise_multiplier=sigma,
                expected_batch_size=ebs, source=noise_source, ledger=ledger,
                sample_rate=setting.sample_rate, artefact="personal",
                noise_multiplicity=setting.noise_multiplicity)
    claimed = dpsgd.reserve(setting.steps)
    norm = c * canary_scale
    noise_gen = source.child("diffusion").torch_generator()

    def per_copy_loss(module: nn.Module, xb: torch.Tensor, yb: torch.Tensor, cb: torch.Tensor
                      ) -> torch.Tensor:
        is_canary = cb >= 0
        onehot = F.one_hot(cb.clamp(min=0), canaries).float() * is_canary[:, None]
        held: dict[str, torch.Tensor] = {}

        def call(x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            eps, held["canary"] = module(x_t, t, labels, onehot)
            return eps

        real = diffusion_loss(call, xb, yb, schedule=schedule, start=0, end=schedule.T,
                              generator=noise_gen)
        return torch.where(is_canary, -norm * held["canary"][:, 0], real)

    sampling = source.child("poisson")
    observed = np.zeros((setting.steps, canaries))
    for s in range(setting.steps):
        idx = torch.from_numpy(poisson_sample(x.shape[0], sample_rate=used_rate,
                                              source=sampling))
        dpsgd.step(per_copy_loss, x[idx], y[idx], cid[idx])
        observed[s] = -model.canary.weight.grad[0].double().numpy() * ebs / c
    dpsgd.close()
    scores = observer_scores(observed, sigma=sigma, q=setting.sample_rate)
    result = one_run_bound(scores=scores, included=included,
                           rules=guess_rules(canaries, per_side=per_side), delta=setting.delta,
                           confidence=half)
    rates = rates_bound(scores=scores, included=included, thresholds=thresholds,
                        delta=setting.delta, confidence=half)
    return DPSGDAudit(
        defect=defect, epsilon_claimed=claimed, noise_multiplier=sigma,
        sample_rate=setting.sample_rate, sample_rate_used=used_rate,
        epsilon_at_rate_used=claimed if used_rate == setting.sample_rate
        else replace(setting, sample_rate=used_rate).claimed_epsilon(sigma),
        noise_multiplicity=setting.noise_multiplicity, steps=setting.steps, canary_norm=norm,
        result=result, rates=rates, confidence=confidence,
        verdict=verdict(lower_bound=max(result.epsilon_lower_bound, rates.epsilon_lower_bound),
                        ceiling=max(result.ceiling, rates.ceiling), claimed=claimed),
        seconds=time.perf_counter() - started,
    )
