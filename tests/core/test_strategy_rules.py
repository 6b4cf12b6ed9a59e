"""What each strategy's rules decide: the refusals (worded as before the rules
owned them), the relation of the shared claim, what DP-SGD is planned and on what."""

from __future__ import annotations

import math

import pytest

from securediff.config import STRATEGIES, from_dict
from securediff.errors import ConfigError
from securediff.statement import privacy_statement
from securediff.strategy_rules import STRATEGY_RULES, either

HYBRID = {"federation": {"strategy": "hybrid", "protocol": "secagg"},
          "privacy": {"accountant": "rdp", "dpsgd_shared": False, "dpsgd_personal": False}}


def _merge(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        for section, values in part.items():
            out.setdefault(section, {}).update(values)
    return out


def test_the_registry_lists_the_strategies_in_the_order_help_shows_them():
    assert STRATEGIES == ("pfdm", "layer-split", "fedavg", "local", "centralized", "hybrid", "public-only",
                          "local+public", "dpstats", "dpstats-gaussian")
    assert all(STRATEGY_RULES[name].name == name for name in STRATEGIES)


@pytest.mark.parametrize(("raw", "message"), [
    ({"federation": {"strategy": "fedavg", "hybrid_forward": True}},
     "federation.hybrid_forward = True is not allowed: false unless federation.strategy = hybrid"),
    ({"federation": {"strategy": "local"}, "privacy": {"client_level": True}},
     "privacy.client_level = True is not allowed: true only for strategy pfdm, layer-split or fedavg "
     "(clients must send shared updates; hybrid is already distributed DP)"),
    ({"privacy": {"dpsgd_personal": True}, "training": {"personal_steps": 0}},
     "training.personal_steps = 0 is not allowed: an integer >= 1 with privacy.dpsgd_personal = true "
     "(for no personal training, set privacy.dpsgd_personal = false)"),
    ({"federation": {"strategy": "public-only"}},
     "public.dataset = '' is not allowed: set for strategy public-only (it starts from the public model)"),
    ({"federation": {"strategy": "local+public"}, "public": {"dataset": "font-digits"},
      "privacy": {"dpsgd_personal": True}},
     "privacy.dpsgd_personal = True is not allowed: false for strategy local+public (not planned)"),
    (_merge(HYBRID, {"federation": {"protocol": "plain"}}),
     "federation.protocol = 'plain' is not allowed: secagg for strategy hybrid (distributed DP needs the "
     "noise shares summed blindly)"),
    (_merge(HYBRID, {"privacy": {"dpsgd_shared": True}}),
     "privacy.dpsgd_shared = True is not allowed: false for strategy hybrid (its shared model is already "
     "trained by distributed DP-SGD)"),
    (_merge(HYBRID, {"federation": {"personal_t": 1000}}),
     "federation.personal_t = 1000 is not allowed: an integer in [1, T-1] (T = 1000)"),
    (_merge(HYBRID, {"protocol": {"min_contributors": 2}}),
     "protocol.min_contributors = 2 is not allowed: left unset for strategy hybrid (the distributed DP "
     "plan sets it)"),
    (_merge(HYBRID, {"federation": {"hybrid_forward": True}}),
     "privacy.t0 = None is not allowed: set for federation.hybrid_forward (the forward noise's share of "
     "the budget is fixed by t0; the distributed DP-SGD noise is calibrated for the rest)"),
])
def test_each_strategy_refuses_what_it_forbids_in_its_own_words(raw, message):
    with pytest.raises(ConfigError) as refused:
        from_dict(raw)
    assert str(refused.value) == message


@pytest.mark.parametrize("strategy", ["pfdm", "layer-split", "fedavg", "local", "centralized"])
def test_what_one_strategy_forbids_another_may_allow(strategy):
    # A hybrid requirement (protocol secagg) and a public one (public.dataset) bind no one else.
    assert from_dict({"federation": {"strategy": strategy, "protocol": "plain"}}).federation.strategy == strategy


def test_hybrid_is_valid_with_what_it_requires():
    assert from_dict(HYBRID).federation.strategy_rules.distributed


@pytest.mark.parametrize(("strategy", "hybrid_forward", "relation", "noised"), [
    ("pfdm", False, "replace-one", True),
    ("hybrid", False, "add/remove", False),
    ("hybrid", True, "replace-one", True),
    ("layer-split", False, "add/remove", False),
    ("fedavg", False, "add/remove", False),
    ("local", False, "add/remove", False),
    ("centralized", False, "add/remove", False),
])
def test_the_shared_claim_is_replace_one_exactly_where_data_is_noised_once(strategy, hybrid_forward, relation,
                                                                           noised):
    rules = STRATEGY_RULES[strategy]
    assert not rules.release_based
    assert rules.shared_relation(hybrid_forward=hybrid_forward) == relation
    assert rules.noises_data(hybrid_forward=hybrid_forward) is noised
    statement = privacy_statement(
        strategy=strategy, protocol_secure=True, protocol_name="secagg", private=True, delta=1e-5, t0=600,
        clip_norm=1.0, forward_exact=4.0, forward_classic=5.0, shared_epsilon=3.0, personal_epsilon=2.0,
        accountant="rdp", labels="public", label_epsilon=1.0, hybrid_forward=hybrid_forward)
    artefacts = [row["artefact"] for row in statement["rows"]]
    assert ("noised data x~" in artefacts) is noised
    samples = next(r["guarantee"] for r in statement["rows"] if r["artefact"].startswith("synthetic"))
    assert rules.samples_personal_only or samples.startswith(f"composition of the shared and personal "
                                                             f"denoisers it samples from: {relation} ")


@pytest.mark.parametrize(("strategy", "shared", "personal"), [
    ("pfdm", "noised", "raw"),
    ("layer-split", "raw", None),
    ("local", None, "raw"),
    ("fedavg", None, None),
    ("centralized", None, None),
])
def test_dpsgd_is_planned_where_the_strategy_trains_that_artefact_and_on_its_input(strategy, shared, personal,
                                                                                   monkeypatch):
    from securediff.federation import client_runtime
    from securediff.federation.client_runtime import dpsgd_events, dpsgd_params_by_artefact

    # Which artefacts get DP-SGD is the question here, not their calibrated noise.
    monkeypatch.setattr(client_runtime, "calibrate_noise_multiplier", lambda **_: 1.0)
    cfg = from_dict({"federation": {"strategy": strategy, "rounds": 2, "local_steps": 2},
                     "privacy": {"dpsgd_shared": True, "dpsgd_personal": True, "dpsgd_epsilon": 5.0},
                     "training": {"personal_steps": 4}})
    params = dpsgd_params_by_artefact(cfg, members=100)
    inputs = {e.artefact: e.input for e in dpsgd_events(cfg, params, rounds=2)}
    assert inputs == {k: v for k, v in (("shared", shared), ("personal", personal)) if v is not None}
    if personal is not None:  # local spends the round's local steps on its own model too
        extra = 2 if STRATEGY_RULES[strategy].personal_runs_local_steps else 0
        assert params["personal"].steps_per_round == 2 + extra


def test_the_non_collaborative_strategies_are_the_experiments_baselines():
    """What a collaboration gain is measured against: no other client's data reaches a
    client's model. Centralized pools everyone's raw data: collaborative (an upper bound)."""
    alone = {name for name, rules in STRATEGY_RULES.items() if not rules.collaborative}
    assert alone == {"local", "public-only", "local+public"}
    assert all(not STRATEGY_RULES[name].federated for name in alone)


def test_refusals_list_the_strategies_as_a_sentence():
    assert either(["a"]) == "a"
    assert either(["a", "b"]) == "a or b"
    assert either(["a", "b", "c"]) == "a, b or c"


def test_every_strategy_words_its_shared_model():
    for rules in STRATEGY_RULES.values():
        statement = privacy_statement(
            strategy=rules.name, protocol_secure=False, protocol_name="plain", private=True, delta=1e-5, t0=600,
            clip_norm=1.0, forward_exact=4.0, forward_classic=5.0, shared_epsilon=math.inf,
            personal_epsilon=math.inf, accountant="rdp", labels="public", label_epsilon=1.0)
        assert next(r for r in statement["rows"] if r["artefact"] == "shared denoiser and its updates")["guarantee"]


@pytest.mark.parametrize("strategy", [name for name, rules in STRATEGY_RULES.items() if rules.release_based])
def test_a_release_based_claim_is_replace_one_with_no_data_noised(strategy):
    """The release is calibrated and its claim stated under replace-one, the relation
    the results compare on, though no record is noised once."""
    rules = STRATEGY_RULES[strategy]
    assert rules.shared_relation(hybrid_forward=False) == "replace-one"
    assert not rules.noises_data(hybrid_forward=False)
