"""Ledger and accountants: pinned DP-SGD references, relation handling,
write-ahead budget enforcement, merging, JSON round trips."""

from __future__ import annotations

import json
import math

import pytest

from securediff.errors import BudgetExceededError, CheckpointError, ConfigError, PrivacyError
from securediff.privacy import accountants
from securediff.privacy.accountants import (
    ACCOUNTANTS,
    AccountantUnsupportedError,
    calibrate_noise_multiplier,
    compose,
    compose_epsilon,
    dpsgd_epsilon,
    gaussian_epsilon,
)
from securediff.privacy.forward import epsilon_exact, forward_sigma, linear_alphas_cumprod
from securediff.privacy.ledger import (
    DPSGDEvent,
    ForwardNoiseEvent,
    PrivacyLedger,
    RandomizedResponseEvent,
    event_from_dict,
)

DELTA = 1e-5
SIGMA_690 = forward_sigma(linear_alphas_cumprod()[690])
FWD = ForwardNoiseEvent(sigma=SIGMA_690, clip_norm=10.0, t0=690, data_id="c0/train")
# FACTS.md: sigma=1, q=256/50000, 10,000 steps, delta=1e-5.
DPSGD_REF = {"rdp": 3.142, "prv": 2.887, "pld": 2.882}


@pytest.mark.parametrize("accountant", sorted(DPSGD_REF))
def test_dpsgd_reference(accountant: str) -> None:
    eps = dpsgd_epsilon(
        noise_multiplier=1.0,
        sample_rate=256 / 50000,
        steps=10_000,
        delta=DELTA,
        accountant=accountant,
    )
    assert eps == pytest.approx(DPSGD_REF[accountant], abs=0.05)


def test_dpsgd_reference_through_a_ledger() -> None:
    ledger = PrivacyLedger(client_id="c", budget_epsilon=10.0, delta=DELTA, accountant="rdp")
    ledger.charge(
        DPSGDEvent(noise_multiplier=1.0, sample_rate=256 / 50000, steps=10_000, artefact="personal")
    )
    assert ledger.epsilon("personal") == pytest.approx(3.142, abs=0.05)
    assert ledger.epsilon("shared") == math.inf  # no events: no guarantee from this ledger


def test_forward_noise_under_every_accountant() -> None:
    exact = epsilon_exact(sigma=SIGMA_690, clip_norm=10.0, delta=DELTA)
    got = {a: compose_epsilon([FWD], delta=DELTA, accountant=a) for a in ACCOUNTANTS}
    assert got["exact"] == pytest.approx(exact, abs=1e-9)
    assert got["pld"] == pytest.approx(exact, abs=2e-3)
    assert got["prv"] == pytest.approx(exact, abs=0.05)
    assert exact <= got["rdp"] < exact + 1.0  # RDP is looser for a single Gaussian


def test_gaussians_compose_exactly() -> None:
    # Two Gaussians with mu1, mu2 are one with sqrt(mu1^2 + mu2^2).
    events = [FWD, ForwardNoiseEvent(sigma=2 * SIGMA_690, clip_norm=10.0, t0=700, data_id="x")]
    mu = math.hypot(20.0 / SIGMA_690, 10.0 / SIGMA_690)
    expected = gaussian_epsilon(mu=mu, delta=DELTA)
    assert compose_epsilon(events, delta=DELTA, accountant="exact") == pytest.approx(
        expected, rel=1e-9
    )
    assert compose_epsilon(events, delta=DELTA, accountant="pld") == pytest.approx(
        expected, abs=2e-3
    )


def test_randomized_response_accounting() -> None:
    rr = RandomizedResponseEvent(epsilon=1.0, num_classes=10)
    assert compose_epsilon([rr], delta=DELTA, accountant="rdp") == 1.0
    assert compose_epsilon([rr, rr], delta=DELTA, accountant="prv") == 2.0
    assert compose_epsilon([rr], delta=DELTA, accountant="pld") == pytest.approx(1.0, abs=2e-3)
    # PLD composes RR with a Gaussian no worse than adding the epsilons
    both = compose_epsilon([rr, FWD], delta=DELTA, accountant="pld")
    assert both <= 1.0 + compose_epsilon([FWD], delta=DELTA, accountant="pld") + 2e-3
    assert both > compose_epsilon([FWD], delta=DELTA, accountant="pld")


def _add_remove_eps_of_gaussian(z: float, steps: int, delta: float) -> float:
    return gaussian_epsilon(mu=math.sqrt(steps) / z, delta=delta)


def test_mixed_relations_compose_directly_under_replace_one() -> None:
    # DP-SGD with q=1 is a plain Gaussian, so "exact" can check both routes.
    sgd = DPSGDEvent(noise_multiplier=4.0, sample_rate=1.0, steps=4, artefact="shared")
    got = compose([FWD, sgd], delta=DELTA, accountant="exact")
    # direct: a replacement moves each step's sum by 2C, so each step is a Gaussian at
    # mu = 2 / 4, composed with the forward noise's mu = 2C / sigma at the full delta
    mu = math.sqrt((20.0 / SIGMA_690) ** 2 + 4 * (2.0 / 4.0) ** 2)
    assert (got.relation, got.method) == ("replace_one", "direct")
    assert got.epsilon == pytest.approx(gaussian_epsilon(mu=mu, delta=DELTA), abs=1e-6)
    # the group-privacy route, still the fallback: independent solve of
    # eps_a = eps(delta/2 / (1 + e^eps_a)) by bisection, plus the forward part at delta/2
    eps_r = gaussian_epsilon(mu=20.0 / SIGMA_690, delta=DELTA / 2)
    lo, hi = 0.0, 20.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _add_remove_eps_of_gaussian(4.0, 4, DELTA / 2 / (1 + math.exp(mid))) > mid:
            lo = mid
        else:
            hi = mid
    parts = accountants._split([FWD, sgd])
    group = accountants._group_privacy(parts["replace_one"], parts["add_remove"], has_ro=True,
                                       delta=DELTA, accountant="exact")
    assert group == pytest.approx(eps_r + 2 * hi, abs=1e-5)
    assert got.epsilon < group  # measured: 10.35 against 13.74
    assert got.epsilon > compose_epsilon([FWD], delta=DELTA, accountant="exact")


def test_add_remove_only_converted_when_replace_one_is_asked() -> None:
    sgd = DPSGDEvent(noise_multiplier=1.0, sample_rate=0.01, steps=100, artefact="shared")
    for accountant in ("rdp", "pld", "prv"):
        ar = compose([sgd], delta=DELTA, accountant=accountant)
        ro = compose([sgd], delta=DELTA, accountant=accountant, relation="replace_one")
        assert ar.relation == "add_remove" and ro.relation == "replace_one"
        assert ro.epsilon > ar.epsilon
    # PRV has no replace-one pair of a subsampled step: group privacy, and it says so
    prv = compose([sgd], delta=DELTA, accountant="prv", relation="replace_one")
    assert prv.method == "group-privacy"
    assert prv.epsilon >= 2 * compose_epsilon([sgd], delta=DELTA, accountant="prv")
    pld = compose([sgd], delta=DELTA, accountant="pld", relation="replace_one")
    assert pld.method == "direct" and pld.epsilon < prv.epsilon  # measured 0.895 against 1.693


def test_never_converts_replace_one_to_add_remove() -> None:
    with pytest.raises(PrivacyError, match="replace-one"):
        compose_epsilon([FWD], delta=DELTA, relation="add_remove")


def test_mixed_ledger_under_every_accountant() -> None:
    sgd = DPSGDEvent(noise_multiplier=1.0, sample_rate=0.01, steps=200, artefact="shared")
    ledger = PrivacyLedger(client_id="c", budget_epsilon=30.0, delta=DELTA, events=[FWD, sgd])
    summary = ledger.summary()["artefacts"]["shared"]
    assert summary["epsilon"]["exact"] is None  # cannot analyse subsampling
    values = {k: v for k, v in summary["epsilon"].items() if v is not None}
    assert set(values) == {"pld", "prv", "rdp"}
    # composed directly at the full delta (prv: by group privacy at delta / 2 each)
    fwd_alone = compose_epsilon([FWD], delta=DELTA, accountant="pld")
    assert all(v > fwd_alone for v in values.values())
    assert summary["claimed"] == {
        "epsilon": min(values.values()),
        "accountant": min(values, key=values.get),
        "relation": "replace_one",
        "method": "direct",  # pld: dp_accounting's replace-one pair of the DP-SGD steps
    }
    with pytest.raises(AccountantUnsupportedError):
        ledger.epsilon("shared", accountant="exact")
    # where the claim needs group privacy, the summary says so
    prv = PrivacyLedger(client_id="c", budget_epsilon=30.0, delta=DELTA, accountant="prv",
                        events=[FWD, sgd])
    assert compose([FWD, sgd], delta=DELTA, accountant="prv").method == "group-privacy"
    assert prv.summary()["artefacts"]["shared"]["epsilon"]["prv"] == values["prv"]


def test_charge_is_write_ahead_and_leaves_ledger_unchanged_on_refusal() -> None:
    ledger = PrivacyLedger(client_id="c", budget_epsilon=9.0, delta=DELTA)
    assert ledger.charge(FWD) == pytest.approx(8.774, abs=2e-3)
    before = ledger.to_json()
    with pytest.raises(BudgetExceededError, match="budget"):
        ledger.charge(
            DPSGDEvent(noise_multiplier=1.0, sample_rate=0.1, steps=100, artefact="shared")
        )
    assert ledger.to_json() == before
    # the personal artefact has its own budget
    ledger.charge(DPSGDEvent(noise_multiplier=1.0, sample_rate=0.1, steps=10, artefact="personal"))
    assert len(ledger.events) == 2


def test_charge_refuses_a_second_forward_noising_of_the_same_data() -> None:
    ledger = PrivacyLedger(client_id="c", budget_epsilon=100.0, delta=DELTA, events=[FWD])
    with pytest.raises(PrivacyError, match="already forward-noised"):
        ledger.charge(ForwardNoiseEvent(sigma=50.0, clip_norm=1.0, t0=900, data_id=FWD.data_id))
    with pytest.raises(PrivacyError):
        PrivacyLedger(client_id="c", budget_epsilon=100.0, delta=DELTA, events=[FWD, FWD])


def test_dpsgd_events_merge_and_compose_the_same() -> None:
    ledger = PrivacyLedger(client_id="c", budget_epsilon=50.0, delta=DELTA, accountant="rdp")
    step = DPSGDEvent(noise_multiplier=1.1, sample_rate=0.02, steps=50, artefact="shared")
    ledger.charge(step)
    ledger.charge(DPSGDEvent(noise_multiplier=0.9, sample_rate=0.02, steps=5, artefact="personal"))
    ledger.charge(step)  # merges with the shared artefact's latest event
    assert ledger.events[0] == DPSGDEvent(1.1, 0.02, 100, "shared")
    assert len(ledger.events) == 2
    unmerged = compose_epsilon([step, step], delta=DELTA, accountant="rdp")
    assert ledger.epsilon("shared") == pytest.approx(unmerged, rel=1e-12)
    ledger.charge(DPSGDEvent(noise_multiplier=1.2, sample_rate=0.02, steps=1, artefact="shared"))
    assert len(ledger.events) == 3  # a different sigma starts a new event


@pytest.mark.parametrize(
    "event",
    [
        FWD,
        DPSGDEvent(1.0, 0.01, 7, "personal"),
        RandomizedResponseEvent(epsilon=2.0, num_classes=10),
    ],
)
def test_event_round_trip(event) -> None:
    data = json.loads(json.dumps(event.to_dict()))
    assert data["kind"] == event.kind
    assert event_from_dict(data) == event


def test_events_validate_their_fields() -> None:
    with pytest.raises(ConfigError):
        ForwardNoiseEvent(sigma=1.0, clip_norm=1.0, t0=10, data_id="d", relation="add_remove")
    with pytest.raises(ConfigError):
        DPSGDEvent(noise_multiplier=1.0, sample_rate=1.5, steps=1, artefact="shared")
    with pytest.raises(ConfigError):
        DPSGDEvent(noise_multiplier=0.0, sample_rate=0.1, steps=1, artefact="shared")
    with pytest.raises(ConfigError):
        RandomizedResponseEvent(epsilon=1.0, num_classes=1)
    with pytest.raises(ConfigError):
        DPSGDEvent(noise_multiplier=1.0, sample_rate=0.1, steps=1, artefact="public")
    with pytest.raises(CheckpointError):
        event_from_dict({"kind": "laplace", "scale": 1.0})
    with pytest.raises(CheckpointError):
        event_from_dict({**FWD.to_dict(), "extra": 1})


def test_ledger_json_round_trip_recomputes_the_same_epsilon() -> None:
    ledger = PrivacyLedger(client_id="c7", budget_epsilon=20.0, delta=DELTA, accountant="rdp")
    ledger.charge(FWD)
    ledger.charge(RandomizedResponseEvent(epsilon=0.5, num_classes=10))
    ledger.charge(DPSGDEvent(1.0, 0.01, 30, "personal"))
    again = PrivacyLedger.from_json(ledger.to_json())
    assert again.events == ledger.events
    assert (again.client_id, again.delta, again.accountant) == ("c7", DELTA, "rdp")
    for artefact in ("shared", "personal"):
        assert again.epsilon(artefact) == ledger.epsilon(artefact)


def test_corrupt_ledgers_raise_checkpoint_error() -> None:
    good = PrivacyLedger(client_id="c", budget_epsilon=20.0, delta=DELTA, events=[FWD]).to_dict()
    with pytest.raises(CheckpointError):
        PrivacyLedger.from_json("{not json")
    with pytest.raises(CheckpointError):
        PrivacyLedger.from_dict({**good, "format": 99})
    with pytest.raises(CheckpointError):
        PrivacyLedger.from_dict({**good, "events": [FWD.to_dict(), FWD.to_dict()]})
    with pytest.raises(CheckpointError):
        PrivacyLedger.from_dict({**good, "delta": 2.0})
    with pytest.raises(CheckpointError):
        PrivacyLedger.from_dict({k: v for k, v in good.items() if k != "client_id"})


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError):
        PrivacyLedger(client_id="c", budget_epsilon=1.0, delta=DELTA, accountant="moments")
    with pytest.raises(ConfigError):
        PrivacyLedger(client_id="c", budget_epsilon=-1.0, delta=DELTA)
    with pytest.raises(ConfigError):
        compose_epsilon([FWD], delta=0.0)
    with pytest.raises(ConfigError):
        dpsgd_epsilon(
            noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=DELTA, accountant="gdp"
        )


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_calibrate_noise_multiplier(accountant: str) -> None:
    kw = dict(sample_rate=0.01, steps=500, delta=DELTA, accountant=accountant)
    sigma = calibrate_noise_multiplier(target_epsilon=2.0, **kw)
    assert dpsgd_epsilon(noise_multiplier=sigma, **kw) <= 2.0
    assert dpsgd_epsilon(noise_multiplier=sigma * (1 - 3e-4), **kw) > 2.0


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_calibrate_noise_multiplier_impossible() -> None:
    with pytest.raises(ConfigError):
        calibrate_noise_multiplier(target_epsilon=-1.0, sample_rate=0.01, steps=10, delta=DELTA)
    with pytest.raises(ConfigError, match="no noise multiplier"):
        calibrate_noise_multiplier(
            target_epsilon=1e-9, sample_rate=1.0, steps=10, delta=DELTA, accountant="rdp"
        )
