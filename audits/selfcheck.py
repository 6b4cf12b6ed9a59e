"""`securediff audit selfcheck`: do the audits catch broken DP, and only broken DP?

Every mechanism is calibrated to a claimed epsilon (4 at delta 1e-5 by
default): the forward noise by exact accounting (t0, then C), DP-SGD by the
noise multiplier the PLD accountant sets for its steps. The audits then run
against the correct mechanisms and against defects, each made by wrapping
the real code (`audits.canaries.defects`): no noise; noise 10x smaller than
claimed; fresh forward noise every epoch for 10 epochs; clipping disabled
(canaries of norm 10 C); a ledger that composes two runs on the same records
by taking the min (claims 4 for a joint 5.99); DP-SGD with noise
multiplicity K that clips each copy separately (a record contributes K C);
an accountant told a sample rate 32x smaller than the sampling uses (16
full batches accounted at q = 1/32: true epsilon 44.5). DP-SGD runs at sample rate 1 and, correct and without noise,
at a rate below 1 (Poisson batches). A broken mechanism passes the check
when its mechanism's primary audit (forward: the likelihood-ratio test;
DP-SGD: the white-box canary audit) certifies a lower bound above the claim;
a correct one when no audit does. The black-box rows are reported for
information: a final-model audit is far weaker, and is not expected to flag
anything at this size (its no-noise row reads "uninformative": it cannot
detect at this size).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from audits.attacks.loss import loss_scores
from audits.attacks.shadows import throwaway_ledger
from audits.attacks.target import Records, Target, fixed_noise
from audits.bounds.verdict import VIOLATION
from audits.canaries.blackbox import blackbox_canary_audit
from audits.canaries.dpsgd import AUDIT_NAME as DPSGD_AUDIT
from audits.canaries.dpsgd import DPSGD_DEFECTS, DPSGDSetting, dpsgd_whitebox_audit
from audits.canaries.forward import AUDIT_NAME as FORWARD_AUDIT
from audits.canaries.forward import (
    FORWARD_DEFECTS,
    LEDGER_DEFECTS,
    ForwardSetting,
    forward_audit,
    release_for,
)
from securediff.data import load_dataset
from securediff.diffusion.schedule import NoiseSchedule, make_schedule
from securediff.errors import ConfigError
from securediff.federation.training import train_steps
from securediff.models.init import build
from securediff.models.unet import UNet, UNetSpec
from securediff.rng import RandomSource

MIN_FORWARD_TRIALS = 10_000_000
MIN_CANARIES = 1_000
ALL_DEFECTS: tuple[str, ...] = tuple(dict.fromkeys(FORWARD_DEFECTS + LEDGER_DEFECTS + DPSGD_DEFECTS))


@dataclass(frozen=True)
class SelfCheckConfig:
    claimed_epsilon: float = 4.0
    delta: float = 1e-5
    confidence: float = 0.95
    forward_trials: int = MIN_FORWARD_TRIALS
    # The one-run bound tightens with m; simulated at eps 4: about 2.1 +- 0.25 at
    # 10^4 canaries, 2.3 +- 0.15 at 3 x 10^4 (7 GB peak), 2.4 +- 0.1 at 10^5.
    canaries: int = 30_000
    dpsgd_steps: int = 4
    dpsgd_sample_rate: float = 1.0
    # Poisson-sampled DP-SGD: a correct and a no-noise row at this rate. 8 steps at
    # q = 0.5 cost what 4 full batches do; an included canary misses all 8 w.p. 1/256.
    subsampled_rate: float = 0.5
    subsampled_steps: int = 8
    # The per-copy clipping defect: K copies each clipped to C make a record K C;
    # K = 8 separates the canaries at any step count (the claim fixes K / sigma per
    # step), so one step suffices and costs what 8 steps of K = 1 do.
    noise_multiplicity: int = 8
    multiplicity_steps: int = 1
    # Its canary one-hots are K times as many rows: (K m / 2) x m floats, 29 GB at
    # K = 8 and m = 3 x 10^4 (measured: the allocation failed on a 23 GB machine).
    # 10^4 canaries flag it (bound 6.53 against the claim of 4, measured).
    multiplicity_canaries: int = 10_000
    # The understated sample rate: with few steps a small sigma still leaves each
    # canary's observations overlapping; 16 full batches separate them.
    understated_steps: int = 16
    defects: tuple[str, ...] | None = None  # the broken mechanisms to audit; None: all
    real_records: int = 64
    blackbox_canaries: int = 1_000  # 0 skips the black-box rows
    blackbox_steps: int = 300
    paper_t0: int | None = 690  # also audit the paper's setting (t0 = 690, C = 10); None skips
    T: int = 1000

    def __post_init__(self) -> None:
        if self.forward_trials < 1 or self.canaries < 2 or self.dpsgd_steps < 1:
            raise ConfigError("need forward_trials >= 1, canaries >= 2 and dpsgd_steps >= 1")
        if self.blackbox_canaries < 0 or self.real_records < 1:
            raise ConfigError("blackbox_canaries must be >= 0 and real_records >= 1")
        if not 0.0 < self.subsampled_rate < 1.0 or self.subsampled_steps < 1:
            raise ConfigError("subsampled_rate must be in (0, 1) and subsampled_steps >= 1")
        if self.noise_multiplicity < 2 or self.multiplicity_canaries < 2 or min(
                self.multiplicity_steps, self.understated_steps) < 1:
            raise ConfigError("noise_multiplicity and multiplicity_canaries must be >= 2, "
                              "multiplicity_steps and understated_steps >= 1")
        unknown = set(self.defects or ()) - set(ALL_DEFECTS)
        if unknown:
            raise ConfigError(f"unknown defect(s) {sorted(unknown)}; known: {', '.join(ALL_DEFECTS)}")

    def runs(self, defect: str) -> bool:
        return self.defects is None or defect in self.defects

    @property
    def meets_minimums(self) -> bool:
        """The issue's acceptance sizes: >= 1e7 forward trial pairs, >= 1,000 canaries."""
        return self.forward_trials >= MIN_FORWARD_TRIALS and self.canaries >= MIN_CANARIES


@dataclass(frozen=True)
class Check:
    row: dict[str, Any]
    broken: bool
    primary: bool  # the audit whose verdict decides a broken mechanism's check

    @property
    def flagged(self) -> bool:
        return self.row["verdict"] == VIOLATION

    @property
    def ok(self) -> bool | None:
        if not self.broken:
            return not self.flagged
        return self.flagged if self.primary else None  # informative only

    def to_dict(self) -> dict[str, Any]:
        return {**self.row, "broken": self.broken, "primary": self.primary,
                "expected": ("violation" if self.primary else "informative") if self.broken
                else "no violation", "flagged": self.flagged, "ok": self.ok}


@dataclass(frozen=True)
class SelfCheckReport:
    config: SelfCheckConfig
    checks: tuple[Check, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def figures(self) -> dict[str, Any]:
        """The headline numbers: forward bound as a fraction of the exact epsilon, the
        DP-SGD white-box bound, each for the correct mechanism."""
        out: dict[str, Any] = {}
        for c in self.checks:
            r = c.row
            if c.broken:
                continue
            if r["audit"] == FORWARD_AUDIT:
                key = f"forward_noise_at_epsilon_{r['epsilon_claimed']:.3g}"
                out[key] = {"epsilon_claimed": r["epsilon_claimed"],
                            "epsilon_lower_bound": r["epsilon_lower_bound"],
                            "fraction": r["epsilon_lower_bound"] / r["epsilon_claimed"],
                            "epsilon_gdp": r["bound"]["epsilon_gdp"], "trials": r["trials"]}
            elif r["audit"] == DPSGD_AUDIT:
                key = ("dpsgd_whitebox" if r["sample_rate"] == 1.0
                       else f"dpsgd_whitebox_at_sample_rate_{r['sample_rate']:g}")
                out[key] = {"epsilon_claimed": r["epsilon_claimed"],
                            "epsilon_lower_bound": r["epsilon_lower_bound"],
                            "canaries": r["canaries"], "steps": r["steps"]}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "seconds": self.seconds,
                "meets_minimums": self.config.meets_minimums, "config": asdict(self.config),
                "figures": self.figures(), "checks": [c.to_dict() for c in self.checks]}


def _forward_trainer(*, setting: ForwardSetting, defect: str | None, schedule: NoiseSchedule,
                     spec: UNetSpec, steps: int, source: RandomSource
                     ) -> Callable[[Records], Target]:
    """The PFDM shared-model pipeline: the (possibly broken) forward noise, then
    `train_steps` on (t0, T]; with several releases, one epoch on each."""

    def train(records: Records) -> Target:
        outs = release_for(setting, defect=defect)(records.x.double(), source.child("noise"),
                                            throwaway_ledger(delta=setting.delta), "members")
        gen = source.child("train").torch_generator()
        model = build(lambda: UNet(spec), generator=gen)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        for x_tilde in outs:
            train_steps(model, opt, x_tilde.float(), records.y, steps=max(1, steps // len(outs)),
                        batch_size=64, schedule=schedule, start=setting.t0, end=schedule.T,
                        generator=gen, null_label=spec.null_label, label_dropout=0.0)
        return Target(name="shared", model=model, start=setting.t0, end=schedule.T,
                      schedule=schedule, null_label=spec.null_label, clip_norm=setting.clip_norm)

    return train


def _blackbox(config: SelfCheckConfig, setting: ForwardSetting, defect: str | None,
              data: Records, schedule: NoiseSchedule, source: RandomSource) -> dict[str, Any]:
    m = config.blackbox_canaries
    signs = source.child("canary-images").bernoulli(0.5, m * 64).reshape(m, 1, 8, 8)
    canaries = Records(torch.from_numpy(np.where(signs, 1.0, -1.0)).float(),
                       torch.from_numpy(source.child("canary-labels").integers(10, m)))
    counterparts = Records(-canaries.x, canaries.y)
    noise = fixed_noise(tuple(canaries.x.shape), draws=4,
                        generator=source.child("score-noise").torch_generator())

    def score(target: Target, records: Records) -> np.ndarray:
        return loss_scores(target, records, t=target.offset(0.05), noise=noise)

    train = _forward_trainer(setting=setting, defect=defect, schedule=schedule,
                             spec=UNetSpec(base_channels=8), steps=config.blackbox_steps,
                             source=source.child("pipeline"))
    audit = blackbox_canary_audit(
        mechanism="forward-noise", defect=defect, canaries=canaries, counterparts=counterparts,
        base=data, train=train, score=score, claimed_epsilon=setting.claimed_epsilon,
        delta=config.delta, source=source.child("slots"), confidence=config.confidence)
    return audit.to_dict()


def _dpsgd_rows(config: SelfCheckConfig) -> list[tuple[str, DPSGDSetting, str | None, int]]:
    """(stream name, setting, defect, canaries) of every DP-SGD row."""
    full = DPSGDSetting(target_epsilon=config.claimed_epsilon, delta=config.delta,
                        sample_rate=config.dpsgd_sample_rate, steps=config.dpsgd_steps)
    own = {"per-copy-clipping": replace(full, noise_multiplicity=config.noise_multiplicity,
                                        steps=config.multiplicity_steps),
           "sample-rate-understated": replace(full, steps=config.understated_steps)}
    m = config.canaries
    rows = [(f"dpsgd/{d}", own.get(d or "", full), d,
             min(m, config.multiplicity_canaries) if d == "per-copy-clipping" else m)
            for d in (None, *DPSGD_DEFECTS)]
    sampled = replace(full, sample_rate=config.subsampled_rate, steps=config.subsampled_steps)
    rows += [(f"dpsgd-sampled/{d}", sampled, d, m) for d in (None, "no-noise")]
    return rows


def run_selfcheck(*, config: SelfCheckConfig, source: RandomSource,
                  progress: Callable[[str], None] | None = None) -> SelfCheckReport:
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    checks: list[Check] = []
    setting = ForwardSetting.calibrated(target_epsilon=config.claimed_epsilon, delta=config.delta,
                                        T=config.T)
    for defect in (None, *FORWARD_DEFECTS, *LEDGER_DEFECTS):
        if defect is not None and not config.runs(defect):
            continue
        say(f"forward noise, {defect or 'correct'}")
        audit = forward_audit(setting=setting, defect=defect, trials=config.forward_trials,
                              source=source.child(f"forward/{defect}"), confidence=config.confidence)
        checks.append(Check(audit.to_dict(), broken=defect is not None, primary=True))
    if config.paper_t0 is not None:
        say(f"forward noise, correct, the paper's t0 = {config.paper_t0}")
        paper = ForwardSetting.paper(t0=config.paper_t0, delta=config.delta, T=config.T)
        audit = forward_audit(setting=paper, defect=None, trials=config.forward_trials,
                              source=source.child("forward/paper"), confidence=config.confidence)
        checks.append(Check(audit.to_dict(), broken=False, primary=True))
    dataset = load_dataset("digits")
    pick = source.child("records").numpy_generator().permutation(dataset.labels.size)
    real = pick[:config.real_records]
    real_x, real_y = torch.from_numpy(dataset.images[real]), torch.from_numpy(dataset.labels[real])
    schedule = make_schedule("linear", T=config.T)
    for name, dp, defect, canaries in _dpsgd_rows(config):
        if defect is not None and not config.runs(defect):
            continue
        say(f"DP-SGD white-box, {defect or 'correct'}, sample rate {dp.sample_rate:g}")
        audit = dpsgd_whitebox_audit(setting=dp, defect=defect, canaries=canaries,
                                     real_x=real_x, real_y=real_y,
                                     spec=UNetSpec(base_channels=4, groups=4), schedule=schedule,
                                     source=source.child(name), confidence=config.confidence)
        checks.append(Check(audit.to_dict(), broken=defect is not None, primary=True))
    if config.blackbox_canaries:
        base_idx = pick[config.real_records:config.real_records + 256]
        base = Records(torch.from_numpy(dataset.images[base_idx]),
                       torch.from_numpy(dataset.labels[base_idx]))
        for defect in (None, "no-noise"):
            say(f"black-box forward noise, {defect or 'correct'}")
            row = _blackbox(config, setting, defect, base, schedule, source.child(f"bb/{defect}"))
            checks.append(Check(row, broken=defect is not None, primary=False))
    return SelfCheckReport(config=config, checks=tuple(checks),
                           seconds=time.perf_counter() - started)
