"""Canary audits on the project's own mechanism code, correct and broken."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import securediff.privacy.forward as forward_module
from audits.attacks.shadows import throwaway_ledger
from audits.attacks.target import Records
from audits.canaries.blackbox import blackbox_canary_audit
from audits.canaries.defects import (
    PerCopyClippedDPSGD,
    ScaledNoiseSource,
    UnclippedDPSGD,
    clipping_disabled,
    min_rule_across_runs,
)
from audits.canaries.forward import FORWARD_DEFECTS, ForwardSetting, forward_audit, release_for
from securediff.errors import ConfigError
from securediff.privacy.dpsgd import DPSGD
from securediff.privacy.forward import noise_once
from securediff.rng import RandomSource


@pytest.fixture(scope="module")
def setting() -> ForwardSetting:
    return ForwardSetting.calibrated(target_epsilon=4.0, delta=1e-5)


def test_calibrated_setting_claims_the_target(setting) -> None:
    assert setting.claimed_epsilon == pytest.approx(4.0, abs=1e-6)
    assert setting.claimed_epsilon <= 4.0
    assert setting.mu == pytest.approx(0.9249, abs=1e-3)  # the Gaussian at eps 4, delta 1e-5
    assert ForwardSetting.paper().claimed_epsilon == pytest.approx(8.77, abs=0.01)


def test_scaled_source_scales_the_real_noise(setting) -> None:
    x = torch.full((20000, 1), 100.0, dtype=torch.float64)
    a = float(setting.abar[setting.t0])
    kw = dict(clip_norm=setting.clip_norm, t0=setting.t0, abar=setting.abar, data_id="d")
    src = RandomSource.insecure_from_seed(0)
    silent = noise_once(x, source=ScaledNoiseSource(src, factor=0.0), ledger=throwaway_ledger(), **kw)
    assert torch.allclose(silent, torch.full_like(x, math.sqrt(a) * setting.clip_norm))
    quiet = noise_once(x, source=ScaledNoiseSource(src, factor=0.1), ledger=throwaway_ledger(), **kw)
    assert float(quiet.std()) == pytest.approx(0.1 * math.sqrt(1 - a), rel=0.03)


def test_clipping_disabled_is_scoped(setting) -> None:
    x = torch.full((4, 1), 50.0, dtype=torch.float64)
    src = ScaledNoiseSource(RandomSource.insecure_from_seed(1), factor=0.0)
    a = float(setting.abar[setting.t0])
    original = forward_module.clip_per_image
    with clipping_disabled():
        out = release_for(setting, defect=None)(x, src, throwaway_ledger(), "d")[0]
    assert forward_module.clip_per_image is original
    assert torch.allclose(out, math.sqrt(a) * x)
    epochs = release_for(setting, defect="fresh-noise-every-epoch")(x, src, throwaway_ledger(), "d")
    assert len(epochs) == 10


def _noiseless_gradient(cls, **extra) -> torch.Tensor:
    """The noised gradient `cls` applies for one record whose per-sample gradient has
    norm 50 (clip 1), with the noise scaled to 0: what the clipping leaves."""
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    dp = cls(model=model, optimizer=opt, max_grad_norm=1.0, noise_multiplier=1.0,
             expected_batch_size=1.0, source=ScaledNoiseSource(
                 RandomSource.insecure_from_seed(0), factor=0.0), ledger=None, **extra)
    x = torch.tensor([[30.0, 40.0, 0.0]])
    dp.step(lambda m, xb: -m(xb)[:, 0], x)
    return model.weight.grad.clone()


def test_unclipped_dpsgd_skips_only_the_clip() -> None:
    assert torch.allclose(_noiseless_gradient(DPSGD), torch.tensor([[-0.6, -0.8, 0.0]]), atol=1e-6)
    assert torch.allclose(_noiseless_gradient(UnclippedDPSGD), torch.tensor([[-30.0, -40.0, 0.0]]))


def test_forward_audit_flags_every_defect_and_never_the_correct_mechanism(setting) -> None:
    src = RandomSource.insecure_from_seed(2)
    correct = forward_audit(setting=setting, defect=None, trials=100_000, source=src.child("ok"))
    assert correct.verdict == "consistent"
    assert 0.4 * 4.0 < correct.bound.epsilon_lower_bound <= 4.0
    assert correct.bound.mu_lower_bound <= setting.mu
    assert correct.bound.ceiling > 4.0
    for defect in FORWARD_DEFECTS:
        broken = forward_audit(setting=setting, defect=defect, trials=100_000, source=src.child(defect))
        assert broken.verdict == "violation", (defect, broken.bound)


def test_forward_audit_refuses_canaries_below_the_clip(setting) -> None:
    with pytest.raises(ConfigError):
        forward_audit(setting=setting, defect=None, trials=10, canary_scale=0.5,
                      source=RandomSource.insecure_from_seed(0))
    with pytest.raises(ConfigError):
        release_for(setting, defect="typo")


def test_blackbox_plumbing_with_a_perfect_and_a_blind_model() -> None:
    m = 400
    canaries = Records(torch.arange(m, dtype=torch.float32).reshape(m, 1, 1, 1) + 1.0,
                       torch.zeros(m, dtype=torch.long))
    counterparts = Records(-canaries.x, canaries.y)
    base = Records(torch.zeros((3, 1, 1, 1)), torch.zeros(3, dtype=torch.long))

    def remember(records: Records) -> set[float]:
        return set(records.x.flatten().tolist())

    def membership(trained: set[float], records: Records) -> np.ndarray:
        return np.array([float(v in trained) for v in records.x.flatten().tolist()])

    kw = dict(mechanism="test", defect=None, canaries=canaries, counterparts=counterparts,
              base=base, claimed_epsilon=1.0, delta=1e-5)
    perfect = blackbox_canary_audit(train=remember, score=membership,
                                    source=RandomSource.insecure_from_seed(0), **kw)
    assert perfect.verdict == "violation"
    assert perfect.result.epsilon_lower_bound == pytest.approx(perfect.result.ceiling)
    blind = blackbox_canary_audit(train=remember, score=lambda t, r: np.zeros(len(r)),
                                  source=RandomSource.insecure_from_seed(0), **kw)
    # A blind detector certifies nothing: it cannot detect, so it is not "consistent".
    assert blind.result.epsilon_lower_bound == 0.0 and blind.verdict == "uninformative"


def test_min_rule_ledger_claims_one_run_and_the_audit_sees_two(setting) -> None:
    # Two correct runs on the same records: the joint epsilon is 5.99; a ledger that
    # composes them by min claims 4.
    ledger = throwaway_ledger()
    release_for(setting, defect="ledger-min-across-runs")(
        torch.zeros((1, 1), dtype=torch.float64), RandomSource.insecure_from_seed(0), ledger, "d")
    assert ledger.epsilon("shared") == pytest.approx(5.99, abs=0.01)
    with min_rule_across_runs():
        assert ledger.epsilon("shared") == pytest.approx(4.0, abs=1e-6)
    assert ledger.epsilon("shared") == pytest.approx(5.99, abs=0.01)  # the rule is restored
    audit = forward_audit(setting=setting, defect="ledger-min-across-runs", trials=2_000_000,
                          source=RandomSource.insecure_from_seed(4))
    assert audit.releases == 2 and audit.epsilon_claimed == pytest.approx(4.0, abs=1e-6)
    assert audit.verdict == "violation", audit.bound
    # The claimed mechanism is Gaussian: its Gaussian-DP reading is reported.
    assert audit.to_dict()["bound"]["epsilon_gdp"] > audit.epsilon_claimed


def test_per_copy_clipping_contributes_k_times_the_clip() -> None:
    k4 = {"noise_multiplicity": 4}
    assert torch.allclose(_noiseless_gradient(DPSGD, **k4), torch.tensor([[-0.6, -0.8, 0.0]]), atol=1e-6)
    assert torch.allclose(_noiseless_gradient(PerCopyClippedDPSGD, **k4),
                          torch.tensor([[-2.4, -3.2, 0.0]]), atol=1e-5)


@pytest.mark.slow
def test_understated_sample_rate_is_flagged() -> None:
    # Full batches accounted at q = 1/32: 16 steps calibrated to epsilon 4 are 44.5.
    from audits.canaries.dpsgd import DPSGDSetting, dpsgd_whitebox_audit
    from securediff.data import load_dataset
    from securediff.diffusion.schedule import make_schedule
    from securediff.models.unet import UNetSpec

    data = load_dataset("digits")
    audit = dpsgd_whitebox_audit(
        setting=DPSGDSetting(target_epsilon=4.0, delta=1e-5, sample_rate=1.0, steps=16),
        defect="sample-rate-understated", canaries=1000,
        real_x=torch.from_numpy(data.images[:64]), real_y=torch.from_numpy(data.labels[:64]),
        spec=UNetSpec(base_channels=4, groups=4), schedule=make_schedule("linear", T=1000),
        source=RandomSource.insecure_from_seed(11))
    row = audit.to_dict()
    assert row["sample_rate"] == 1.0 / 32 and row["sample_rate_used"] == 1.0
    assert row["epsilon_claimed"] == pytest.approx(4.0, abs=1e-3)
    assert row["epsilon_at_rate_used"] >= 2 * row["epsilon_claimed"]
    assert audit.verdict == "violation", (audit.result, audit.rates)
