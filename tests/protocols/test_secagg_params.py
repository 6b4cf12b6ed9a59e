"""The parameter analysis of secagg and its neighbour graph."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import hypergeom

from protocols.errors import ProtocolInputError
from protocols.registry import make_protocol
from protocols.secagg import merkle
from protocols.secagg.graph import graph_seed, harary_graph, is_connected, shareholder_x
from protocols.secagg.params import (
    SecAggParams,
    correctness_log2,
    hypergeom_tail,
    lowest_threshold,
    plan_graph,
    security_log2,
)


@pytest.mark.parametrize(("N", "K", "d", "a"), [(99, 20, 38, 19), (49, 10, 22, 11), (9, 2, 6, 3),
                                                (999, 200, 76, 38), (20, 5, 5, 0)])
def test_hypergeometric_tail_matches_scipy(N, K, d, a) -> None:
    assert hypergeom_tail(N, K, d, a) == pytest.approx(hypergeom.sf(a - 1, N, K, d), rel=1e-9,
                                                       abs=1e-300)


def _default_by_scipy(n: int, dropout: float, bits: int) -> tuple[int, int]:
    dropped = min(n - 1, math.ceil(dropout * n))
    for k in range(2, n - 1, 2):
        t = k // 2 + 1
        if n * hypergeom.sf(k - t, n - 1, dropped, k) <= 2.0**-bits:
            return k, t
    return n - 1, (n - 1 + 1) // 2 + 1


@pytest.mark.parametrize("n", [3, 4, 5, 10, 20, 50, 100, 300])
@pytest.mark.parametrize("dropout", [0.1, 0.2, 0.3])
def test_the_default_degree_is_the_smallest_meeting_the_correctness_target(n, dropout) -> None:
    plan = plan_graph(n, SecAggParams(dropout_tolerance=dropout))
    assert (plan.degree, plan.threshold) == _default_by_scipy(n, dropout, 20)


def test_documented_examples() -> None:
    for n, k, t in [(10, 6, 4), (50, 22, 12), (100, 38, 20), (1000, 76, 39)]:
        plan = plan_graph(n, SecAggParams())
        assert (plan.degree, plan.threshold) == (k, t)


@pytest.mark.parametrize(("k", "lo"), [(2, 2), (3, 3), (4, 3), (9, 6), (38, 20)])
def test_lowest_threshold_is_a_strict_majority_of_shareholders(k, lo) -> None:
    assert lowest_threshold(k) == lo and 2 * lo > k + 1 and 2 * (lo - 1) <= k + 1


@pytest.mark.parametrize(
    ("params", "n", "needle"),
    [
        (dict(degree=4, threshold=2), 10, "allows 3 <= t <= 4"),
        (dict(degree=4, threshold=5), 10, "threshold must be <= degree"),
        (dict(degree=5), 20, "must be even"),
        (dict(degree=1), 20, "degree must be"),
        (dict(), 2, "at least 3 clients"),
        (dict(threshold=3), 10, "allows 4 <= t <= 6"),
        (dict(degree=10, threshold=6, collusion_fraction=0.1), 100, "security bound"),
        (dict(clip_range=-1.0), 10, "clip_range"),
        (dict(dropout_tolerance=0.6), 10, "dropout_tolerance"),
        (dict(consistency_check="yes"), 10, "consistency_check"),
    ],
)
def test_only_what_the_analysis_allows_can_be_configured(params, n, needle) -> None:
    with pytest.raises(ProtocolInputError, match=needle):
        make_protocol("secagg", **params).threshold(n)


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(ProtocolInputError, match="unexpected keyword"):
        make_protocol("secagg", neighbours=4)


def test_collusion_raises_the_threshold() -> None:
    colluding = plan_graph(100, SecAggParams(collusion_fraction=0.05))
    assert colluding.threshold > lowest_threshold(colluding.degree)
    k, t = colluding.degree, colluding.threshold
    assert security_log2(100, k, t, 0.05, 0.2) <= -40 < security_log2(100, k, t - 1, 0.05, 0.2)


def test_correctness_bound_is_monotone_in_degree() -> None:
    values = [correctness_log2(100, k, k // 2 + 1, 0.2) for k in range(10, 60, 2)]
    assert all(b <= a + 1e-9 for a, b in zip(values, values[1:], strict=False))


def test_complete_graph_for_small_rounds_and_when_asked() -> None:
    assert plan_graph(4, SecAggParams()).degree == 3
    plan = plan_graph(30, SecAggParams(degree=100))
    assert plan.complete and (plan.degree, plan.threshold) == (29, 16)


# -- the graph ---------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "k"), [(10, 4), (31, 6), (100, 38), (7, 6), (12, 20)])
def test_harary_graph_is_regular_symmetric_and_connected(n: int, k: int) -> None:
    ids = [f"c{i:03d}" for i in range(n)]
    graph = harary_graph(ids, degree=k, seed=bytes(32))
    degree = min(k, n - 1)
    assert all(len(graph[c]) == degree and c not in graph[c] for c in ids)
    assert all(a in graph[b] for a in ids for b in graph[a])
    assert is_connected(ids, graph)


def test_the_permutation_depends_on_every_key() -> None:
    ids = tuple(f"c{i}" for i in range(20))
    keys = [bytes([i]) * 32 for i in range(60)]

    def seed_of(keys, *, round_index=0, ids=ids):
        cols = [b"".join(keys[j::3]) for j in range(3)]
        root = merkle.key_list_root(ids, *cols)
        return graph_seed(round_index=round_index, degree=4,
                          commitment=merkle.list_commitment(round_index, ids, root))

    seed = seed_of(keys)
    changed = seed_of([*keys[:-1], b"\xff" * 32])
    assert seed != changed and seed != seed_of(keys, round_index=1)
    assert seed != seed_of(keys, ids=(*ids[:-1], "c99"))
    assert harary_graph(ids, degree=4, seed=seed) != harary_graph(ids, degree=4, seed=changed)


def test_positions_are_close_to_uniform() -> None:
    ids = [f"c{i}" for i in range(8)]
    hits = np.zeros((8, 8))
    for s in range(400):
        graph = harary_graph(ids, degree=2, seed=s.to_bytes(32, "big"))
        hits[0] += [c in graph["c0"] for c in ids]
    # each of the 7 others is a neighbour of c0 with probability 2/7
    assert hits[0][0] == 0 and np.all(np.abs(hits[0][1:] / 400 - 2 / 7) < 0.08)


def test_removing_two_runs_of_k_over_2_disconnects_and_one_run_does_not() -> None:
    ids = [f"c{i:02d}" for i in range(20)]
    seed = bytes(32)
    graph = harary_graph(ids, degree=4, seed=seed)
    # recover the ring order from the graph: walk the nearest-neighbour cycle
    ring = _ring_order(graph, ids)
    one_run = set(ring[3:5])
    assert is_connected(set(ids) - one_run, graph)
    two_runs = one_run | set(ring[12:14])
    assert not is_connected(set(ids) - two_runs, graph)
    assert shareholder_x(reversed(ids))["c00"] == 1


def _ring_order(graph, ids):
    # in H(n, 4) a node's two ring neighbours are those sharing 2 common neighbours with it
    start = ids[0]
    order, prev = [start], None
    while len(order) < len(ids):
        cur = order[-1]
        nxt = [p for p in graph[cur] if p != prev and len(graph[cur] & graph[p]) == 2]
        prev = cur
        order.append(sorted(nxt)[0] if len(order) == 1 else nxt[0])
    return order
