"""What an active secagg aggregator can learn, computed by an oracle independent of
the client code (tests/protocols/secagg_leakage.py), over adversary strategies
searched by Hypothesis: per-client withheld shares, survivor lists and unmasking
requests (subsets and supersets of the honest list, different views for different
clients), dropped lists, substituted keys, replayed messages of another round,
dropouts at every stage and colluding clients (who may advertise a low-order key or
copy an honest client's). The guarantee: at most the sum of the honest inputs over one survivor
list of at least max(t, min_contributors) clients, and nothing when no honest
client unmasks. `SECUREDIFF_ADVERSARY_EXAMPLES` sets the search's size
(`make adversary` runs 5,000)."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from protocols.errors import ProtocolInputError
from protocols.secagg import SecAggProtocol
from protocols.secagg.graph import is_connected
from protocols.secagg.params import plan_graph
from tests.protocols.secagg_leakage import Adversary, check, identities, learnable

EXAMPLES = int(os.environ.get("SECUREDIFF_ADVERSARY_EXAMPLES", "300"))
STAGES = ("RouteKeys", "ShareKeys", "ForwardShares", "MaskedInput", "ConsistencyRequest",
          "ConsistencySign", "UnmaskRequest", "Unmask")
SERVER_STAGES = ("RouteKeys", "ForwardShares", "ConsistencyRequest", "UnmaskRequest")
NO_EDIT = (frozenset(), frozenset(), None, frozenset())


def _ids(n):
    return identities(n).client_ids


# -- the two findings, by hand, at the sizes they were reproduced at ------------------
def _per_client_requests(victim: str, ids):
    """Finding 1: each honest client gets its own request, a subset of the honest list
    that drops as many of the victim's neighbours it holds shares of as keeps the list
    connected, so that the neighbours' key shares and the victim's self-mask shares
    are all revealed while no client reveals both shares of one owner."""

    def adapt(graph):
        nbrs = sorted(graph[victim])
        lists = {}
        for h in ids:
            if h == victim:
                continue
            drop = [w for w in nbrs if w in graph[h] and w != h]
            while drop and not is_connected(set(ids) - set(drop), graph):
                drop.pop()
            lists[h] = (frozenset(), frozenset(), victim,
                        frozenset(nbrs.index(w) for w in drop))
        return Adversary(unmask_lists=lists)

    return Adversary(adapt=adapt)


def _selective_forwarding(victim: str, t: int):
    """Finding 2: the victim gets the shares of only t - 1 neighbours; those are then
    left off the one list everybody is sent."""

    def adapt(graph):
        withheld = frozenset(range(t - 1, len(graph[victim])))
        kept = frozenset(range(t - 1))
        edit = (frozenset(), frozenset(), victim, kept)
        everyone = {c: edit for c in graph}
        return Adversary(withhold_shares={victim: withheld}, sign_lists=everyone,
                         unmask_lists=everyone)

    return Adversary(adapt=adapt)


@pytest.mark.parametrize("n,min_contributors", [(10, 0), (20, 0), (50, 0), (50, 28)])
def test_per_client_unmask_requests_learn_nothing_beyond_one_sum(n, min_contributors):
    protocol = SecAggProtocol(min_contributors=min_contributors)
    out, why = check(protocol, n, _per_client_requests(_ids(n)[3], _ids(n)))
    assert why is None, why
    assert out.refused  # the honest clients saw a list they had not signed


def test_without_the_consistency_check_per_client_requests_reveal_an_input():
    """The documented weakness of consistency_check=false: the oracle finds the
    victim's own input (this also shows the oracle can see a leak)."""
    n = 10
    victim = _ids(n)[3]
    out, why = check(SecAggProtocol(consistency_check=False), n,
                     _per_client_requests(victim, _ids(n)))
    assert why is not None
    rows, basis = learnable(out)
    singles = [{rows[i] for i, a in enumerate(v) if a} for v in basis]
    assert {victim} in singles or len(basis) > 1


@pytest.mark.parametrize("n", [5, 7, 10, 20])
@pytest.mark.parametrize("consistency", [True, False])
def test_selective_forwarding_learns_nothing_beyond_one_sum(n, consistency):
    protocol = SecAggProtocol(consistency_check=consistency)
    t = plan_graph(n, protocol.config).threshold
    victim = _ids(n)[2]
    out, why = check(protocol, n, _selective_forwarding(victim, t))
    assert why is None, why
    assert victim in out.refused  # a neighbour on the list it never masked with


def test_an_honest_round_releases_exactly_the_sum_over_the_list():
    out, why = check(SecAggProtocol(), 8, Adversary())
    assert why is None
    rows, basis = learnable(out)
    assert len(basis) == 1 and all(basis[0]) and len(set(basis[0])) == 1


# -- the search ------------------------------------------------------------------------
@st.composite
def rounds(draw):
    n = draw(st.integers(3, 30), label="n")
    consistency = draw(st.booleans(), label="consistency")
    fraction = draw(st.sampled_from([0.0, 0.0, 0.1, 0.2, 0.3]), label="collusion_fraction")
    params = {"consistency_check": consistency, "collusion_fraction": fraction}
    if draw(st.booleans(), label="explicit graph"):
        k = draw(st.sampled_from([n - 1, *range(2, n - 1, 2)]), label="degree")
        params["degree"] = k
        lo = (k + 1) // 2 + 1
        if lo <= k and draw(st.booleans(), label="explicit t"):
            params["threshold"] = draw(st.integers(lo, k), label="threshold")
    params["min_contributors"] = draw(st.sampled_from([0, 0, 2, n // 2, n - 1]), label="floor")
    protocol = SecAggProtocol(**params)
    try:
        plan_graph(n, protocol.config)
    except ProtocolInputError:
        return None
    ids = _ids(n)
    colluders = frozenset(draw(st.sets(st.sampled_from(ids),
                                       max_size=min(-(-int(fraction * n * 100) // 100), n // 2)),
                               label="colluders"))
    honest = [c for c in ids if c not in colluders]
    some = st.sets(st.sampled_from(ids), max_size=3)
    ranks = st.frozensets(st.integers(0, 12), max_size=6)
    edit = st.one_of(st.just(NO_EDIT), st.tuples(some.map(frozenset), some.map(frozenset),
                                                 st.sampled_from(ids), ranks))
    # A few lists shared by groups of clients: equivocation is a per-client choice
    # among them, so clients often agree, as a successful attack would need.
    menu = draw(st.lists(edit, min_size=1, max_size=3), label="lists")
    pick = st.integers(0, len(menu) - 1).map(lambda i: menu[i])
    per_client = st.dictionaries(st.sampled_from(honest), pick, max_size=len(honest)) \
        if honest else st.just({})
    adversary = Adversary(
        colluders=colluders,
        drop_before=draw(st.dictionaries(st.sampled_from(honest), st.sampled_from(STAGES),
                                         max_size=max(1, n // 4)) if honest else st.just({}),
                         label="dropouts"),
        withhold_shares=draw(st.dictionaries(st.sampled_from(ids), ranks, max_size=3),
                             label="withheld shares"),
        substitute_key_for=draw(st.dictionaries(st.sampled_from(ids), st.sampled_from(ids),
                                                max_size=1), label="substituted keys"),
        route_without=draw(st.dictionaries(st.sampled_from(ids), some.map(frozenset),
                                           max_size=3), label="equivocated key lists"),
        replay_at=draw(st.dictionaries(st.sampled_from(ids), st.sampled_from(SERVER_STAGES),
                                       max_size=1), label="replays"),
        colluder_keys=draw(st.dictionaries(st.sampled_from(sorted(colluders)),
                                           st.sampled_from(["low-order", "copy"]), max_size=1)
                           if colluders else st.just({}), label="colluder keys"),
        sign_lists=draw(per_client, label="lists to sign"),
        unmask_lists=draw(per_client, label="unmask lists"),
        dropped_as=draw(st.dictionaries(st.sampled_from(ids), st.sampled_from(["u2", "all"]),
                                        max_size=n), label="dropped lists"),
    )
    if not consistency:
        # Without the check the guarantee holds only against an aggregator that sends
        # every client the same lists (docs/secagg.md): one key list and one survivor
        # list for everyone.
        one = menu[0]
        adversary = dataclasses.replace(adversary, sign_lists={}, route_without={},
                                        unmask_lists={c: one for c in ids})
    return protocol, n, adversary


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=rounds())
def test_no_aggregator_strategy_learns_more_than_one_sum(case) -> None:
    if case is None:
        event("parameters refused by the analysis")
        return
    protocol, n, adversary = case
    out, why = check(protocol, n, adversary)
    event("one sum learnable" if out.answered_lists and learnable(out)[1] else "nothing learnable")
    event("some honest client refused" if out.refused else "no refusal")
    assert why is None, f"{why}; refused: {out.refused}"
