"""Test split, partitions, holdouts, minority classes and the JSON record."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securediff.data import (
    SCHEMES,
    ClientSplit,
    Partition,
    load_dataset,
    majority_classes,
    minority_classes,
    partition,
    split_test,
)
from securediff.errors import DataError


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return load_dataset("digits").labels


@pytest.fixture(scope="module")
def pool(labels) -> np.ndarray:
    return split_test(labels)[0]


def tv_from_uniform(counts: np.ndarray) -> np.ndarray:
    dist = counts / counts.sum(axis=1, keepdims=True)
    return 0.5 * np.abs(dist - 1.0 / counts.shape[1]).sum(axis=1)


def check_invariants(p: Partition, labels: np.ndarray, pool: np.ndarray) -> None:
    held = np.concatenate([a for c in p.clients for a in (c.member_indices, c.holdout_indices)])
    assert np.bincount(held, minlength=labels.size).max() == 1  # nobody shares a record
    np.testing.assert_array_equal(np.sort(held), np.sort(pool))  # the pool, all of it
    np.testing.assert_array_equal(p.pool_indices, np.sort(pool))
    np.testing.assert_array_equal(p.test_indices, np.setdiff1d(np.arange(labels.size), pool))
    f = p.params["holdout_fraction"]
    for c in p.clients:
        assert np.intersect1d(c.member_indices, c.holdout_indices).size == 0
        n = c.member_indices.size + c.holdout_indices.size
        assert abs(c.holdout_indices.size - f * n) <= 1
        assert c.member_indices.size >= 1
    assert [c.client_id for c in p.clients] == [f"client-{i:02d}" for i in range(p.num_clients)]


# -- split_test -----------------------------------------------------------------
def test_split_test_pinned_and_stratified(labels):
    pool, test = split_test(labels)
    assert (pool.size, test.size) == (1348, 449)  # round(1797 / 4) = 449
    assert np.intersect1d(pool, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([pool, test])), np.arange(1797))
    per_class = np.bincount(labels[test], minlength=10)
    assert np.all(np.abs(per_class - 0.25 * np.bincount(labels)) <= 1)


def test_split_test_is_fixed_by_seed(labels):
    a, b, c = split_test(labels, seed=3), split_test(labels, seed=3), split_test(labels, seed=4)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize(
    "kwargs", [{"test_fraction": 0.0}, {"test_fraction": 1.0}, {"seed": -1}, {"seed": 1.5}]
)
def test_split_test_rejects(labels, kwargs):
    with pytest.raises(DataError):
        split_test(labels, **kwargs)


def test_split_test_rejects_bad_labels():
    with pytest.raises(DataError):
        split_test(np.array([0.5, 1.0]))
    with pytest.raises(DataError):
        split_test(np.array([1]))


# -- partition schemes ---------------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_partitions_the_pool(labels, pool, scheme):
    p = partition(labels, pool_indices=pool, num_clients=10, scheme=scheme, seed=1)
    check_invariants(p, labels, pool)
    assert p.scheme == scheme and p.seed == 1 and p.num_samples == 1797


def test_iid_sizes_pinned(labels, pool):
    # 1348 = 8 x 135 + 2 x 134; holdout round(0.2 n) = 27 either way
    p = partition(labels, pool_indices=pool, num_clients=10, scheme="iid", seed=0)
    assert [c.member_indices.size for c in p.clients] == [108] * 8 + [107] * 2
    assert [c.holdout_indices.size for c in p.clients] == [27] * 10
    assert p.params == {"num_clients": 10, "holdout_fraction": 0.2, "min_samples_per_client": 8}


def test_dirichlet_skew_grows_as_alpha_falls(labels, pool):
    def mean_tv(alpha: float) -> float:
        p = partition(
            labels, pool_indices=pool, num_clients=10, scheme="dirichlet", seed=0, alpha=alpha
        )
        return float(tv_from_uniform(p.class_counts(labels, num_classes=10)).mean())

    skewed, middle, flat = mean_tv(0.1), mean_tv(1.0), mean_tv(100.0)
    assert skewed > 0.5 > middle > 0.15 > 0.1 > flat
    assert skewed > 5 * flat


def test_dirichlet_respects_minimum_and_records_alpha(labels, pool):
    p = partition(
        labels,
        pool_indices=pool,
        num_clients=10,
        scheme="dirichlet",
        seed=2,
        alpha=0.1,
        min_samples_per_client=20,
    )
    sizes = [c.member_indices.size + c.holdout_indices.size for c in p.clients]
    assert min(sizes) >= 20
    assert p.params["alpha"] == 0.1


def test_dirichlet_infeasible_gives_advice(labels, pool):
    with pytest.raises(DataError, match="raise alpha"):
        partition(
            labels,
            pool_indices=pool,
            num_clients=10,
            scheme="dirichlet",
            seed=0,
            alpha=0.01,
            min_samples_per_client=120,
        )


def test_shards_give_k_classes_per_client():
    labels = np.repeat(np.arange(10), 40)  # 20 shards of 20: each shard is one class
    pool = np.arange(400)
    one = partition(labels, pool_indices=pool, num_clients=10, scheme="shards", seed=0,
                    shards_per_client=1)  # fmt: skip
    classes = [
        np.unique(labels[np.concatenate([c.member_indices, c.holdout_indices])])
        for c in one.clients
    ]
    assert all(c.size == 1 for c in classes)
    assert sorted(int(c[0]) for c in classes) == list(range(10))  # each client a whole class
    two = partition(labels, pool_indices=pool, num_clients=10, scheme="shards", seed=0)
    counts = [
        np.unique(labels[np.concatenate([c.member_indices, c.holdout_indices])]).size
        for c in two.clients
    ]
    assert max(counts) <= 2 and sum(n == 2 for n in counts) >= 8
    assert all(c.member_indices.size + c.holdout_indices.size == 40 for c in two.clients)
    assert two.params["shards_per_client"] == 2


def test_quantity_skew(labels, pool):
    p = partition(labels, pool_indices=pool, num_clients=10, scheme="quantity", seed=0,
                  quantity_sigma=1.0)  # fmt: skip
    sizes = np.array([c.member_indices.size + c.holdout_indices.size for c in p.clients])
    assert sizes.min() >= 8 and sizes.max() > 2 * sizes.min()
    flat = partition(labels, pool_indices=pool, num_clients=10, scheme="quantity", seed=0,
                     quantity_sigma=0.0)  # fmt: skip
    flat_sizes = [c.member_indices.size + c.holdout_indices.size for c in flat.clients]
    assert max(flat_sizes) - min(flat_sizes) <= 1


def test_holdout_is_stratified():
    labels = np.repeat([0, 1], [60, 40])
    p = partition(labels, pool_indices=np.arange(100), num_clients=1, scheme="iid", seed=0)
    held = labels[p.clients[0].holdout_indices]
    assert np.bincount(held).tolist() == [12, 8]


def test_same_seed_same_partition(labels, pool):
    for scheme in SCHEMES:
        kwargs = {"pool_indices": pool, "num_clients": 5, "scheme": scheme, "alpha": 0.5}
        a = partition(labels, seed=7, **kwargs)
        assert a == partition(labels, seed=7, **kwargs)
        assert a != partition(labels, seed=8, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"scheme": "random"}, "unknown partition scheme"),
        ({"num_clients": 0}, "num_clients"),
        ({"num_clients": 200}, "use fewer clients"),
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha"),
        ({"scheme": "shards", "shards_per_client": 0}, "shards_per_client"),
        ({"scheme": "shards", "shards_per_client": 200}, "shards need"),
        ({"scheme": "quantity", "quantity_sigma": -1.0}, "quantity_sigma"),
        ({"holdout_fraction": 1.0}, "holdout_fraction"),
        ({"seed": -2}, "seed"),
        ({"pool_indices": np.array([0, 0, 1])}, "duplicate"),
        ({"pool_indices": np.array([5000])}, "out of range"),
    ],
)
def test_partition_rejects(labels, pool, kwargs, fragment):
    args = {"pool_indices": pool, "num_clients": 10, "scheme": "iid", "seed": 0} | kwargs
    with pytest.raises(DataError, match=fragment):
        partition(labels, **args)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(40, 400),
    num_classes=st.integers(1, 8),
    num_clients=st.integers(1, 5),
    scheme=st.sampled_from(SCHEMES),
    holdout_fraction=st.sampled_from([0.0, 0.1, 0.2, 0.5]),
    pool_fraction=st.floats(0.4, 1.0),
    data_seed=st.integers(0, 2**32),
    seed=st.integers(0, 2**32),
)
def test_partition_properties(
    n, num_classes, num_clients, scheme, holdout_fraction, pool_fraction, data_seed, seed
):
    # labels and pool drawn from a seeded local generator: far faster than drawing
    # hundreds of list elements through Hypothesis, and still varied per example
    gen = np.random.Generator(np.random.PCG64(data_seed))
    labels = gen.integers(0, num_classes, size=n)
    pool = np.flatnonzero(gen.random(n) < pool_fraction)
    if pool.size < num_clients * 3:
        pool = np.arange(n)
    p = partition(
        labels, pool_indices=pool, num_clients=num_clients, scheme=scheme, seed=seed,
        alpha=1.0, shards_per_client=3, holdout_fraction=holdout_fraction,
        min_samples_per_client=3,
    )  # fmt: skip
    check_invariants(p, labels, pool)
    assert p.class_counts(labels, num_classes=num_classes).sum() == sum(
        c.member_indices.size for c in p.clients
    )
    assert Partition.from_json(p.to_json()) == p


# -- counts, summaries, minority classes ----------------------------------------
def test_class_counts_and_summary(labels, pool):
    p = partition(labels, pool_indices=pool, num_clients=4, scheme="dirichlet", seed=0, alpha=0.1)
    counts = p.class_counts(labels)
    assert counts.shape == (4, 10)
    rows = p.summary_rows(labels, 10)
    assert [r["client"] for r in rows] == ["client-00", "client-01", "client-02", "client-03"]
    for row, c, k in zip(rows, p.clients, counts, strict=True):
        assert set(row) == {"client", "members", "holdout", "class_counts", "minority_classes"}
        assert row["members"] == c.member_indices.size == sum(row["class_counts"])
        assert row["holdout"] == c.holdout_indices.size
        assert row["class_counts"] == k.tolist()
        assert row["minority_classes"] == [j for j in range(10) if k[j] / k.sum() < 0.05]
    json.dumps(rows)  # plain values only
    assert any(r["minority_classes"] for r in rows)  # alpha = 0.1 leaves some classes rare
    with pytest.raises(DataError, match="labels for a partition"):
        p.class_counts(labels[:-1])


def test_minority_threshold_is_strict():
    # 3 of 60 is exactly 5%: not a minority; 2 of 60 is; an absent class is
    assert minority_classes(np.repeat([0, 1], [57, 3]), num_classes=3) == (2,)
    assert minority_classes(np.repeat([0, 1], [58, 2]), num_classes=3) == (1, 2)
    assert majority_classes(np.repeat([0, 1], [58, 2]), num_classes=3) == (0,)
    assert minority_classes(np.repeat([0, 1], [80, 20]), num_classes=2, threshold=0.25) == (1,)
    assert minority_classes(np.zeros(0, np.int64), num_classes=2) == (0, 1)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=80))
def test_minority_and_majority_split_the_classes(values):
    labels = np.array(values)
    minority = set(minority_classes(labels, num_classes=6))
    majority = set(majority_classes(labels, num_classes=6))
    assert minority | majority == set(range(6)) and not minority & majority
    counts = np.bincount(labels, minlength=6)
    assert all(counts[c] * 20 < labels.size for c in minority)
    assert all(counts[c] * 20 >= labels.size for c in majority)


def test_minority_rejects():
    with pytest.raises(DataError):
        minority_classes(np.array([0, 3]), num_classes=3)
    with pytest.raises(DataError):
        minority_classes(np.array([0, 1]), num_classes=3, threshold=0.0)


# -- JSON record -----------------------------------------------------------------
@pytest.fixture(scope="module")
def record(labels, pool) -> dict:
    p = partition(labels, pool_indices=pool, num_clients=3, scheme="dirichlet", seed=5)
    return json.loads(p.to_json())


def test_json_round_trip(labels, pool, record):
    p = partition(labels, pool_indices=pool, num_clients=3, scheme="dirichlet", seed=5)
    q = Partition.from_json(p.to_json())
    assert q == p and q.params == {**p.params} and q.seed == 5
    assert record["format"] == "securediff.partition" and record["version"] == 1
    assert not q.clients[0].member_indices.flags.writeable  # frozen all the way down


def _corrupt(record: dict, edit) -> str:
    copy = json.loads(json.dumps(record))
    edit(copy)
    return json.dumps(copy)


def _move_to_other_client(r):
    r["clients"][1]["member_indices"].append(r["clients"][0]["member_indices"][0])


CORRUPTIONS = {
    "shared record": (_move_to_other_client, "more than once"),
    "member is also holdout": (
        lambda r: r["clients"][0]["holdout_indices"].append(r["clients"][0]["member_indices"][0]),
        "overlap",
    ),
    "test record held": (
        lambda r: r["test_indices"].append(r["clients"][0]["member_indices"][0]),
        "more than once",
    ),
    "out of range": (lambda r: r["test_indices"].append(1797), "out of range"),
    "negative": (lambda r: r["test_indices"].append(-1), "negative"),
    "float index": (lambda r: r["test_indices"].append(1.5), "integer indices"),
    "bool index": (lambda r: r["clients"][0].update(holdout_indices=[True]), "integer indices"),
    "string index": (lambda r: r["test_indices"].append("7"), "integer indices"),
    "duplicate id": (lambda r: r["clients"][1].update(client_id="client-00"), "unique"),
    "missing key": (lambda r: r["clients"][0].pop("holdout_indices"), "holdout_indices"),
    "no clients": (lambda r: r.update(clients=[]), "at least one"),
    "clients not a list": (lambda r: r.update(clients=7), "malformed"),
    "unknown scheme": (lambda r: r.update(scheme="magic"), "scheme"),
    "bad seed": (lambda r: r.update(seed="zero"), "seed"),
    "negative size": (lambda r: r.update(num_samples=-1), "num_samples"),
    "params not scalars": (lambda r: r.update(params={"alpha": [1]}), "params"),
    "wrong format": (lambda r: r.update(format="other"), "not a partition"),
    "future version": (lambda r: r.update(version=2), "version"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_json_refused(record, case):
    edit, fragment = CORRUPTIONS[case]
    Partition.from_json(json.dumps(record))  # the untouched record loads
    with pytest.raises(DataError, match=fragment):
        Partition.from_json(_corrupt(record, edit))


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "null", b"\xff\xfe"])
def test_non_partition_text_refused(text):
    with pytest.raises(DataError):
        Partition.from_json(text)


def test_client_split_needs_members():
    with pytest.raises(DataError, match="no members"):
        ClientSplit(client_id="client-00", member_indices=np.array([], np.int64),
                    holdout_indices=np.array([1]))  # fmt: skip
