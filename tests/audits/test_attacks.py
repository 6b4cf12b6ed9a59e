"""Attacks against a deliberately overfit denoiser, calibration against one that
never saw either set, and the pieces the attacks are built from."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audits.attacks import Target, evaluate_attack, split_records
from audits.attacks.base import choose_on_reference
from audits.attacks.lira import balanced_membership, lira_attack
from audits.attacks.loss import loss_attack
from audits.attacks.memorization import memorization_report
from audits.attacks.pia import pia_attack
from audits.attacks.secmi import secmi_attack, steps_at
from securediff.diffusion.schedule import make_schedule
from securediff.errors import ConfigError
from securediff.privacy.forward import clip_per_image


def report(scores):
    return evaluate_attack(scores, claimed=None, accountant=None, delta=1e-5, confidence=0.95)


@pytest.fixture(scope="module")
def lira_reports(overfit):
    shadow = overfit.recipe.__class__(**{**overfit.recipe.__dict__, "steps": 150})
    off, on = lira_attack(overfit.target, overfit.split, train_shadow=shadow.train, shadows=2,
                          generator=torch.Generator().manual_seed(3), rng=np.random.default_rng(3))
    return report(off), report(on)


@pytest.mark.parametrize("attack", ["loss", "secmi", "pia"])
def test_each_attack_separates_an_overfit_model(overfit, attack: str) -> None:
    run = {"loss": lambda: loss_attack(overfit.target, overfit.split,
                                       generator=torch.Generator().manual_seed(2)),
           "secmi": lambda: secmi_attack(overfit.target, overfit.split),
           "pia": lambda: pia_attack(overfit.target, overfit.split)}[attack]
    r = report(run())
    assert r.auc.value >= 0.9, (attack, r.auc, r.details)
    assert r.members == 16 and r.nonmembers == 16
    assert r.verdict == "measurement"  # one model's members: not independent trials
    # 16 non-members cannot resolve 1% FPR: null, with the reason.
    assert all(t.value is None and t.reason for t in r.tpr_at_fpr)


def test_lira_offline_and_online_separate_an_overfit_model(lira_reports) -> None:
    for r in lira_reports:
        assert r.auc.value >= 0.9, (r.attack, r.auc)
    assert {r.attack for r in lira_reports} == {"lira-offline", "lira-online"}


def test_calibration_on_a_model_that_never_saw_either_set(overfit) -> None:
    """Both 'members' and 'non-members' are unseen. Each AUC interval should hold
    0.5 and each FPR of a threshold set on held-back reference non-members should
    fall in its interval, 95% of the time each: over 3 random splits x 3 attacks
    (9 AUCs, 27 thresholds) we ask for at least 7 and 23 (each fails by chance
    with probability under 1%)."""
    a, b = overfit.unseen
    aucs, rates = [], []
    for seed in range(3):
        split = split_records(members=a, nonmembers=b, ref_fraction=0.5,
                              rng=np.random.default_rng(seed))
        gen = torch.Generator().manual_seed(seed)
        for scores in (loss_attack(overfit.target, split, generator=gen, draws=2),
                       pia_attack(overfit.target, split), secmi_attack(overfit.target, split)):
            r = report(scores)
            aucs.append(r.auc.low <= 0.5 <= r.auc.high)
            rates += [c.within for c in r.calibration]
            assert r.bound.epsilon_lower_bound < 1.0
    assert sum(aucs) >= 7, aucs
    assert sum(rates) >= 23, rates


def test_split_and_choice_never_look_at_the_evaluated_split(overfit) -> None:
    s = overfit.split
    ids = [set(map(tuple, part.x.reshape(len(part), -1).tolist())) for part in
           (s.ref_members, s.ref_nonmembers, s.eval_members, s.eval_nonmembers)]
    assert all(not (ids[i] & ids[j]) for i in range(4) for j in range(i + 1, 4))
    n_ref = len(s.ref_members) + len(s.ref_nonmembers)
    good = np.r_[np.ones(len(s.ref_members)), np.zeros(len(s.ref_nonmembers))]
    rng = np.random.default_rng(0)
    noise = rng.normal(size=n_ref)
    scored = {"a": np.r_[good + 0.1 * noise, rng.normal(size=32)],
              "b": np.r_[-good + 0.1 * noise, 5 + np.zeros(32)]}
    c = choose_on_reference(s, scored, orient=False)
    assert c.key == "a" and c.sign == 1.0
    c = choose_on_reference(s, {"b": scored["b"]}, orient=True)
    assert c.key == "b" and c.sign == -1.0


def test_shared_target_sees_the_mean_of_the_noised_record() -> None:
    schedule = make_schedule("linear", T=50)
    model = torch.nn.Identity()
    t = Target(name="s", model=model, start=20, end=50, schedule=schedule, null_label=10,
               clip_norm=2.0)
    x = torch.full((3, 1, 2, 2), 3.0)
    expected = math.sqrt(schedule.abar[20]) * clip_per_image(x, clip_norm=2.0)
    assert torch.allclose(t.data_point(x), expected.float())
    assert t.rel(30) == pytest.approx(schedule.abar[30] / schedule.abar[20])
    assert steps_at(t, 0.1) == (23, 1)
    with pytest.raises(ConfigError):
        Target(name="s", model=model, start=20, end=50, schedule=schedule, null_label=10)


def test_lira_membership_is_balanced() -> None:
    keep = balanced_membership(shadows=6, records=50, rng=np.random.default_rng(0))
    assert keep.shape == (6, 50) and (keep.sum(0) == 3).all()
    with pytest.raises(ConfigError):
        balanced_membership(shadows=3, records=5, rng=np.random.default_rng(0))


def test_memorization_counts_copies_and_controls() -> None:
    rng = np.random.default_rng(0)
    members = rng.normal(size=(40, 16))
    holdout = rng.normal(size=(40, 16))
    copies = np.repeat(members[:5], 4, axis=0) + 1e-3 * rng.normal(size=(20, 16))
    r = memorization_report(samples=copies, members=members, holdout=holdout,
                            rng=np.random.default_rng(1), neighbours=10)
    assert r.near_copies_of_all_members == 20 and r.near_copies_of_holdout == 0
    assert r.filtered_candidates == 20 and r.extracted == 20  # each repeated 4 times
    fresh = rng.normal(size=(200, 16))
    r = memorization_report(samples=fresh, members=members, holdout=holdout,
                            rng=np.random.default_rng(1), neighbours=10)
    assert r.near_copies_of_all_members == 0 and r.extracted == 0
    assert r.fraction_low <= 0.5 <= r.fraction_high and r.p_value > 0.01


def test_pooling_keeps_held_back_nonmembers_out_of_the_steering_half() -> None:
    from audits.attacks.base import AttackScores
    from audits.runs import _pooled

    def part(name: str, offset: float) -> AttackScores:
        ref_n = offset + np.arange(5.0)  # first 2 steered the choices of this client
        return AttackScores("loss", name, np.zeros(3), ref_n, np.zeros(2), np.zeros(2), selection=2)

    pooled = _pooled([part("a", 0.0), part("b", 10.0)], "loss")
    assert pooled.selection_nonmembers == 4
    assert pooled.ref_nonmembers.tolist() == [0, 1, 10, 11, 2, 3, 4, 12, 13, 14]
    assert pooled.target == "personal:all-clients" and pooled.eval_members.size == 4


def _dummy_split(sizes: tuple[int, int, int, int]):
    from audits.attacks import Records
    from audits.attacks.base import AuditSplit

    def recs(n: int, first: int) -> Records:
        return Records(torch.arange(first, first + n, dtype=torch.float32).reshape(n, 1, 1, 1),
                       torch.zeros(n, dtype=torch.long))

    firsts = np.cumsum([0, *sizes])
    return AuditSplit(*(recs(n, int(f)) for n, f in zip(sizes, firsts[:-1], strict=True)))


def test_calibration_lets_models_of_different_scales_be_pooled() -> None:
    """Two personal models that each separate their records equally well, on scales a
    hundred times apart: raw scores pooled lose most of it, calibrated ones keep it."""
    from audits.attacks.base import cut
    from audits.attacks.calibration import combine_best
    from audits.bounds.roc import auc_with_ci
    from audits.runs import _pooled

    rng = np.random.default_rng(0)
    sizes = (40, 40, 40, 40)
    split = _dummy_split(sizes)
    member = np.concatenate([np.full(n, i % 2 == 0) for i, n in enumerate(sizes)])
    raw_parts, cal_parts = [], []
    for scale, offset in ((1.0, 0.0), (100.0, -400.0)):
        base = rng.normal(size=(3, member.size)) + 1.5 * member  # three "timesteps"
        values = offset + scale * base
        raw_parts.append(cut(attack="loss", target="m", split=split, values=values[0]))
        combined, chosen = combine_best(values, [1, 2, 3], split, orient=False)
        cal_parts.append(cut(attack="loss", target="m", split=split, values=combined))
    auc = lambda s: auc_with_ci(members=s.eval_members, nonmembers=s.eval_nonmembers).value  # noqa: E731
    raw, cal = auc(_pooled(raw_parts, "loss")), auc(_pooled(cal_parts, "loss"))
    alone = min(auc(p) for p in cal_parts)
    assert raw < 0.75 < alone - 0.05 < cal, (raw, cal, alone)


def test_calibration_never_looks_at_the_evaluated_records() -> None:
    from audits.attacks.calibration import combine_best

    split = _dummy_split((20, 20, 20, 20))
    rng = np.random.default_rng(1)
    values = rng.normal(size=(4, 80))
    values[:, :20] += np.array([[2.0], [0.5], [0.0], [1.0]])
    changed = values.copy()
    changed[:, 40:] = rng.normal(size=(4, 40)) * 50 + 7  # the evaluated part only
    a, ca = combine_best(values, [10, 20, 30, 40], split, orient=True)
    b, cb = combine_best(changed, [10, 20, 30, 40], split, orient=True)
    assert ca == cb
    assert np.array_equal(a[:40], b[:40])
