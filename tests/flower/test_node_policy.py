"""A node's own minimums for the rounds the aggregator sets up: secagg parameters
(consistency round, degree, threshold, min_contributors) against the documented
analysis under the node's assumptions, and ckks under the active-aggregator
threat model. The property test's oracle recomputes the analysis of
protocols/secagg/params.py from its docstring, with scipy's hypergeometric pmf,
rather than calling it."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import ProtocolAbort, make_protocol
from securediff.errors import ConfigError
from securediff.flower.policy import NodePolicy
from securediff.flower.secagg_policy import SecAggMinimums

from . import test_remote_ckks_tee as remote_ckks
from . import test_remote_driver as remote

DROPOUT, CORRECTNESS_BITS, ROUND_BITS = 0.2, 20, 40  # the analysis' defaults
HBC = "honest-but-curious"


# -- the oracle: the analysis as its docstring states it -----------------------------
@functools.cache
def _tail(population: int, marked: int, draws: int, at_least: int) -> float:
    from scipy.stats import hypergeom

    if at_least <= 0:
        return 1.0
    top = min(marked, draws)
    return float(sum(hypergeom.pmf(i, population, marked, draws)
                     for i in range(at_least, top + 1)))


@functools.cache
def _secure(n: int, k: int, t: int, collusion: float, bits: int) -> bool:
    if not (2 * t > k + 1 and t <= k):
        return False
    corrupt = math.ceil(collusion * n)
    if corrupt == 0:
        return True
    both_shares = n * _tail(n - 1, corrupt, k, 2 * t - k - 1)
    removed = min(n, corrupt + math.ceil(DROPOUT * n))
    disconnect = 0.0 if k >= n - 1 else n * n / 2 * (removed / n) ** k
    return both_shares + disconnect <= 2.0 ** -bits


def _smallest_t(n: int, k: int, collusion: float, bits: int) -> int | None:
    return next((t for t in range(1, k + 1) if _secure(n, k, t, collusion, bits)), None)


@functools.cache
def _plan(n: int, collusion: float, bits: int) -> tuple[int, int | None]:
    """The default degree (smallest even k meeting the correctness target with its
    smallest secure t, else the complete graph) and that degree's smallest secure t."""
    dropped = min(n - 1, math.ceil(DROPOUT * n))
    for k in range(2, n - 1, 2):
        t = _smallest_t(n, k, collusion, bits)
        if t is not None and n * _tail(n - 1, dropped, k, k - t + 1) <= 2.0 ** -CORRECTNESS_BITS:
            return k, t
    return n - 1, _smallest_t(n, n - 1, collusion, bits)


def _resolve(n: int, degree: int, threshold: int, collusion: float) -> tuple[int, int] | None:
    """The round's (k, t) under its own parameters; None where its analysis refuses them."""
    if degree:
        k = min(degree, n - 1)
        if k < n - 1 and k % 2:
            return None
    else:
        k = _plan(n, collusion, ROUND_BITS)[0]
    t = threshold or _smallest_t(n, k, collusion, ROUND_BITS)
    if t is None or not _secure(n, k, t, collusion, ROUND_BITS):
        return None
    return k, t


def _expected_refusal(n, rnd, node) -> str | None:
    """The first parameter a node should name, in the order the node checks them."""
    if not rnd["consistency_check"] and not node["allow"]:
        return "consistency_check"
    if rnd["min_contributors"] < node["min_contributors"]:
        return "min_contributors"
    plan_k, plan_t = _plan(n, node["collusion"], node["bits"])
    if plan_t is None:
        return "collusion-fraction"
    resolved = _resolve(n, rnd["degree"], rnd["threshold"], rnd["collusion"])
    if resolved is None:
        return "degree/threshold"
    k, t = resolved
    if k < plan_k:
        return "degree"
    if t < plan_t:
        return "threshold"
    if not _secure(n, k, t, node["collusion"], node["bits"]):
        return "degree/threshold"
    return None


@st.composite
def _rounds(draw):
    """Weighted towards rounds near the node's minimums: degrees and thresholds around
    the oracle's plan, mostly with the consistency round, the node's min-contributors
    around the round's; the defaults (0) are common."""
    n = draw(st.integers(3, 36))
    node = {"allow": draw(st.booleans()),
            "collusion": draw(st.sampled_from([0.0, 0.0, 0.05, 0.1, 0.2])),
            "bits": draw(st.sampled_from([20, 40]))}
    plan_k, plan_t = _plan(n, node["collusion"], node["bits"])
    near = st.integers(-3, 2)
    degree = draw(st.one_of(st.just(0), st.integers(2, n + 1),
                            near.map(lambda d: max(2, plan_k + d))))
    top = degree or n
    threshold = draw(st.one_of(st.just(0), st.integers(0, top),
                               near.map(lambda d: min(top, max(0, (plan_t or top) + d)))))
    contributors = draw(st.integers(0, n))
    node["min_contributors"] = draw(st.sampled_from([0, contributors, contributors + 1]))
    rnd = {"degree": degree, "threshold": threshold,
           "consistency_check": draw(st.sampled_from([True, True, True, False])),
           "min_contributors": contributors,
           "collusion": draw(st.sampled_from([0.0, 0.1]))}
    return n, rnd, node


@settings(max_examples=150, deadline=None)
@given(_rounds())
def test_a_node_accepts_a_secagg_round_iff_it_meets_the_nodes_minimums(case):
    n, rnd, node = case
    policy = NodePolicy(
        threat_model=HBC if node["allow"] else "active",
        secagg=SecAggMinimums(require_consistency_check=not node["allow"],
                              collusion_fraction=node["collusion"], security_bits=node["bits"],
                              min_contributors=node["min_contributors"]))
    protocol = make_protocol("secagg", degree=rnd["degree"], threshold=rnd["threshold"],
                             consistency_check=rnd["consistency_check"],
                             min_contributors=rnd["min_contributors"],
                             collusion_fraction=rnd["collusion"])
    expected = _expected_refusal(n, rnd, node)
    if expected is None:
        assert policy.apply("client-00", protocol, participants=n) is protocol
    else:
        with pytest.raises(ProtocolAbort) as refused:
            policy.apply("client-00", protocol, participants=n)
        assert f"secagg round refused, {expected}:" in str(refused.value)


# -- each weaker parameter, by name ----------------------------------------------------
@pytest.mark.parametrize(("node", "params", "n", "named"), [
    ({}, {"consistency_check": False}, 10, "consistency_check"),
    ({"min-contributors": 5}, {"min_contributors": 4}, 10, "min_contributors"),
    ({}, {"degree": 4}, 10, "degree"),  # the plan at n = 10 is (6, 4)
    ({"collusion-fraction": 0.1}, {"degree": 19, "threshold": 11}, 20, "threshold"),
    ({"collusion-fraction": 0.1}, {"degree": 60, "threshold": 32}, 100, "degree/threshold"),
    ({"collusion-fraction": 0.1}, {}, 3, "collusion-fraction"),
])
def test_each_weaker_secagg_parameter_is_refused_by_name(node, params, n, named):
    policy = NodePolicy.from_node_config(node)
    with pytest.raises(ProtocolAbort, match=f"secagg round refused, {named}:"):
        policy.apply("client-00", make_protocol("secagg", **params), participants=n)
    # the aggregator's defaults pass a default node at every n
    NodePolicy().apply("client-00", make_protocol("secagg"), participants=n)


def test_no_consistency_round_only_where_the_node_allows_it():
    allowing = NodePolicy.from_node_config({"threat-model": HBC,
                                            "allow-no-consistency-check": "true"})
    protocol = make_protocol("secagg", consistency_check=False)
    assert allowing.apply("client-00", protocol, participants=4) is protocol
    with pytest.raises(ConfigError, match="needs threat-model = honest-but-curious"):
        NodePolicy.from_node_config({"allow-no-consistency-check": True})


def test_ckks_is_refused_under_the_active_aggregator_policy():
    ckks = make_protocol("ckks")
    with pytest.raises(ProtocolAbort, match="threat-model = active"):
        NodePolicy().apply("client-00", ckks, participants=4)
    with pytest.raises(ProtocolAbort, match="threat-model = active"):
        NodePolicy.from_node_config({"threat-model": "active"}).apply("c", ckks, participants=4)
    colluding = NodePolicy.from_node_config({"threat-model": HBC, "collusion-fraction": 0.05})
    with pytest.raises(ProtocolAbort, match="collusion-fraction = 0.05"):
        colluding.apply("client-00", ckks, participants=4)
    trusting = NodePolicy.from_node_config({"threat-model": HBC})
    assert trusting.apply("client-00", ckks, participants=4) is ckks


@pytest.mark.parametrize(("config", "why"), [
    ({"threat-model": "paranoid"}, "threat-model"),
    ({"collusion-fraction": 0.5}, "collusion_fraction"),
    ({"secagg-security-bits": 0}, "security_bits"),
    ({"min-contributors": -1}, "min-contributors"),
    ({"min-contributors": "many"}, "bad protocol policy"),
])
def test_bad_node_policy_settings_are_config_errors(config, why):
    with pytest.raises(ConfigError, match=why):
        NodePolicy.from_node_config(config)


# -- through the remote round driver: the round aborts, the close names the parameter ---
world = remote.world


@pytest.mark.parametrize(("name", "params", "named"), [
    ("ckks", {}, "threat-model = active"),
    ("secagg", {"consistency_check": False}, "consistency_check"),
    ("secagg", {"degree": 2}, "degree"),  # 4 clients: the plan is the complete graph
])
def test_default_nodes_refuse_the_round_and_the_close_says_why(world, name, params, named):
    results, report = remote_ckks._rounds(make_protocol(name, **params), world, 1)
    assert isinstance(results[0], ProtocolAbort)
    assert report.ok and report.aborted_rounds == 1
    close = json.loads(Path(world[4]).read_text().splitlines()[-1])
    dropped = dict(close["statement"]["dropped"])
    assert set(dropped) == set(remote.CLIENTS)
    assert all(named in why for why in dropped.values()), dropped


def test_a_node_that_allows_it_runs_secagg_without_the_consistency_round(world):
    for node in world[3].values():
        node.policy = NodePolicy.from_node_config({"threat-model": HBC,
                                                   "allow-no-consistency-check": True})
    results, report = remote_ckks._rounds(make_protocol("secagg", consistency_check=False),
                                          world, 1)
    assert report.ok, report.problems
    assert results[0].contributors == tuple(remote.CLIENTS)


def test_a_node_with_a_real_tee_root_refuses_the_simulated_enclave(tmp_path):
    """The aggregator's attestation_root does not bind a node: under the node's own
    real root, the simulated enclave's quotes (mintable by anyone) abort the round."""
    from protocols import make_protocol, run_round
    from protocols.roster import Identities
    from protocols.stages import ClientInput
    from protocols.tee import SimulatedVendor

    root = tmp_path / "root.pem"
    root.write_bytes(SimulatedVendor.generate(name="node's real root (test)")
                     .certificate.pem())
    node = NodePolicy.from_node_config({"tee-root": str(root)})
    tee = node.apply("c0", make_protocol("tee"), participants=4)
    assert not tee.policy.simulated_root
    ids = Identities.generate(["c0", "c1", "c2", "c3"])
    inputs = {c: ClientInput(vector=np.ones(3), weight=1.0) for c in ids.client_ids}
    with pytest.raises(ProtocolAbort, match="simulated"):
        run_round(tee, round_index=0, inputs=inputs, identities=ids, transcript=None)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="tee-root"):
        NodePolicy.from_node_config({"tee-root": str(tmp_path / "junk.pem")})
