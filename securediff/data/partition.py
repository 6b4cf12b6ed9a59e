"""The fixed test split and the federated partition of the rest.

A partition is simulation set-up, not a privacy mechanism, so its randomness
comes from a PCG64 generator built from a recorded seed: two runs with the
same seed see the same clients and can be compared. Every pool record lands
in exactly one client; each client keeps a stratified holdout that is never
trained on (the audits' non-members).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from securediff.errors import DataError

SCHEMES = ("iid", "dirichlet", "shards", "quantity")
MINORITY_THRESHOLD = 0.05
_DIRICHLET_TRIES = 1000
_FORMAT = "securediff.partition"
_VERSION = 1


# -- helpers -------------------------------------------------------------------
def _rng(seed: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative int, not {seed!r}")
    return np.random.Generator(np.random.PCG64(int(seed)))


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"labels must be a 1-D integer array, not {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError("labels must be non-negative")
    return labels


def _as_index_array(values: Any, *, what: str) -> np.ndarray:
    """A read-only int64 copy; refuses floats, bools, nesting and negatives."""
    arr = np.asarray(values)
    if arr.size == 0:
        arr = np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(f"{what} must be a 1-D array of integer indices")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise DataError(f"{what} holds a negative index ({int(arr.min())})")
    arr.setflags(write=False)
    return arr


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding: non-negative ints summing to `total`, each
    within one of its exact share total * w / sum(w); ties go to the lower index."""
    w = np.asarray(weights, dtype=np.float64)
    quotas = total * w / w.sum()
    counts = np.floor(quotas).astype(np.int64)
    remainders = quotas - counts
    rest = total - int(counts.sum())
    if rest >= 0:
        counts[np.argsort(-remainders, kind="stable")[:rest]] += 1
    else:  # only reachable through float rounding of the quotas
        for j in np.argsort(remainders, kind="stable"):
            if rest == 0:
                break
            if counts[j] > 0:
                counts[j] -= 1
                rest += 1
    return counts


def _group_by_label(indices: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Indices grouped by class, classes ascending, each group in its input order."""
    order = np.argsort(labels[indices], kind="stable")
    sorted_idx = indices[order]
    _, starts = np.unique(labels[sorted_idx], return_index=True)
    return np.split(sorted_idx, starts[1:])


# -- the fixed test split ------------------------------------------------------
def split_test(
    labels: np.ndarray, *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(pool_indices, test_indices), both sorted: a fixed stratified split.

    The test set has round(N * test_fraction) records shared over the classes
    by largest remainder, so every class is within one record of its share.
    It is only ever used for evaluation.
    """
    labels = _check_labels(labels)
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), not {test_fraction}")
    if labels.size < 2:
        raise DataError(f"cannot split {labels.size} record(s) into a pool and a test set")
    rng = _rng(seed)
    groups = _group_by_label(np.arange(labels.size), labels)
    n_test = _apportion(_round_half_up(labels.size * test_fraction), [len(g) for g in groups])
    pool, test = [], []
    for group, k in zip(groups, n_test, strict=True):
        shuffled = rng.permutation(group)
        test.append(shuffled[:k])
        pool.append(shuffled[k:])
    pool_idx = np.sort(np.concatenate(pool)) if pool else np.zeros(0, np.int64)
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    if pool_idx.size == 0 or test_idx.size == 0:
        raise DataError(
            f"{labels.size} records with test_fraction={test_fraction} leave an empty split"
        )
    return pool_idx.astype(np.int64), test_idx.astype(np.int64)


# -- values --------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ClientSplit:
    """One client's share: members (trained on) and holdout (never trained on)."""

    client_id: str
    member_indices: np.ndarray
    holdout_indices: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise DataError(f"client_id must be a non-empty string, not {self.client_id!r}")
        members = _as_index_array(self.member_indices, what=f"{self.client_id} member_indices")
        holdout = _as_index_array(self.holdout_indices, what=f"{self.client_id} holdout_indices")
        if members.size == 0:
            raise DataError(f"{self.client_id} has no members")
        if np.intersect1d(members, holdout).size:
            raise DataError(f"{self.client_id}: members and holdout overlap")
        object.__setattr__(self, "member_indices", members)
        object.__setattr__(self, "holdout_indices", holdout)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClientSplit):
            return NotImplemented
        return (
            self.client_id == other.client_id
            and np.array_equal(self.member_indices, other.member_indices)
            and np.array_equal(self.holdout_indices, other.holdout_indices)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class Partition:
    """Who holds which of `num_samples` records; `test_indices` are those outside
    the pool (the fixed test split). Checked on construction: every index in
    range and assigned at most once."""

    scheme: str
    params: dict[str, Any]
    seed: int
    test_indices: np.ndarray
    clients: tuple[ClientSplit, ...]
    num_samples: int

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise DataError(
                f"unknown partition scheme {self.scheme!r}; known: {', '.join(SCHEMES)}"
            )
        _rng(self.seed)  # validates the seed
        if not isinstance(self.params, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, bool | int | float | str))
            for k, v in self.params.items()
        ):
            raise DataError("partition params must map names to JSON scalars")
        if (
            isinstance(self.num_samples, bool)
            or not isinstance(self.num_samples, int | np.integer)
            or self.num_samples < 0
        ):
            raise DataError(f"num_samples must be a non-negative int, not {self.num_samples!r}")
        clients = tuple(self.clients)
        if not clients or not all(isinstance(c, ClientSplit) for c in clients):
            raise DataError("a partition needs at least one ClientSplit")
        ids = [c.client_id for c in clients]
        if len(set(ids)) != len(ids):
            raise DataError("client ids must be unique")
        test = _as_index_array(self.test_indices, what="test_indices")
        every = np.concatenate(
            [test] + [a for c in clients for a in (c.member_indices, c.holdout_indices)]
        )
        if every.size and every.max() >= self.num_samples:
            raise DataError(f"index {int(every.max())} out of range for {self.num_samples} records")
        seen = np.bincount(every, minlength=int(self.num_samples))
        if seen.size and seen.max() > 1:
            raise DataError(f"record {int(np.argmax(seen))} is assigned more than once")
        object.__setattr__(self, "test_indices", test)
        object.__setattr__(self, "clients", clients)
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "num_samples", int(self.num_samples))
        object.__setattr__(self, "seed", int(self.seed))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Partition):
            return NotImplemented
        return (
            (self.scheme, self.params, self.seed, self.num_samples)
            == (other.scheme, other.params, other.seed, other.num_samples)
            and np.array_equal(self.test_indices, other.test_indices)
            and self.clients == other.clients
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    @property
    def pool_indices(self) -> np.ndarray:
        """Every record some client holds (members and holdout), sorted."""
        parts = [a for c in self.clients for a in (c.member_indices, c.holdout_indices)]
        return np.sort(np.concatenate(parts))

    def _labels(self, labels: np.ndarray) -> np.ndarray:
        labels = _check_labels(labels)
        if labels.size != self.num_samples:
            raise DataError(f"{labels.size} labels for a partition of {self.num_samples} records")
        return labels

    def class_counts(self, labels: np.ndarray, *, num_classes: int | None = None) -> np.ndarray:
        """Member counts per class, shape (num_clients, num_classes)."""
        labels = self._labels(labels)
        k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
        if labels.size and labels.max() >= k:
            raise DataError(f"labels reach {int(labels.max())}, beyond num_classes={k}")
        return np.stack([np.bincount(labels[c.member_indices], minlength=k) for c in self.clients])

    def summary_rows(self, labels: np.ndarray, num_classes: int) -> list[dict[str, Any]]:
        """One plain dict per client for a table: sizes, member class counts,
        and minority classes (under 5% of the client's members)."""
        counts = self.class_counts(labels, num_classes=num_classes)
        labels = self._labels(labels)
        return [
            {
                "client": c.client_id,
                "members": int(c.member_indices.size),
                "holdout": int(c.holdout_indices.size),
                "class_counts": [int(v) for v in row],
                "minority_classes": list(
                    minority_classes(labels[c.member_indices], num_classes=num_classes)
                ),
            }
            for c, row in zip(self.clients, counts, strict=True)
        ]

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "version": _VERSION,
                "scheme": self.scheme,
                "params": self.params,
                "seed": self.seed,
                "num_samples": self.num_samples,
                "test_indices": self.test_indices.tolist(),
                "clients": [
                    {
                        "client_id": c.client_id,
                        "member_indices": c.member_indices.tolist(),
                        "holdout_indices": c.holdout_indices.tolist(),
                    }
                    for c in self.clients
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Partition:
        """Parse and re-validate (disjoint, in range); anything else is a `DataError`."""
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"partition file is not valid JSON ({exc})") from None
        if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
            raise DataError(f"not a partition file (no format {_FORMAT!r})")
        if obj.get("version") != _VERSION:
            raise DataError(f"partition format version {obj.get('version')!r} is not {_VERSION}")
        try:
            clients = tuple(
                ClientSplit(
                    client_id=c["client_id"],
                    member_indices=c["member_indices"],
                    holdout_indices=c["holdout_indices"],
                )
                for c in obj["clients"]
            )
            return cls(
                scheme=obj["scheme"],
                params=obj["params"],
                seed=obj["seed"],
                test_indices=obj["test_indices"],
                clients=clients,
                num_samples=obj["num_samples"],
            )
        except DataError:
            raise
        except KeyError as exc:
            raise DataError(f"partition file lacks the key {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(f"partition file is malformed ({exc})") from None


# -- minority / majority classes -----------------------------------------------
def minority_classes(
    labels_of_client: np.ndarray, *, num_classes: int, threshold: float = MINORITY_THRESHOLD
) -> tuple[int, ...]:
    """Classes holding less than `threshold` of the client's records, absent ones included."""
    counts = _counts(labels_of_client, num_classes=num_classes, threshold=threshold)
    n = counts.sum()
    if n == 0:
        return tuple(range(num_classes))
    return tuple(int(c) for c in np.flatnonzero(counts / n < threshold))


def majority_classes(
    labels_of_client: np.ndarray, *, num_classes: int, threshold: float = MINORITY_THRESHOLD
) -> tuple[int, ...]:
    """The classes that are not minority classes."""
    minority = set(minority_classes(labels_of_client, num_classes=num_classes, threshold=threshold))
    return tuple(c for c in range(num_classes) if c not in minority)


def _counts(labels: np.ndarray, *, num_classes: int, threshold: float) -> np.ndarray:
    labels = _check_labels(labels)
    if num_classes < 1:
        raise DataError(f"num_classes must be positive, not {num_classes}")
    if not 0.0 < threshold <= 1.0:
        raise DataError(f"threshold must be in (0, 1], not {threshold}")
    if labels.size and labels.max() >= num_classes:
        raise DataError(f"label {int(labels.max())} is beyond num_classes={num_classes}")
    return np.bincount(labels, minlength=num_classes)


# -- the partition ------------------------------------------------------------
def partition(
    labels: np.ndarray,
    *,
    pool_indices: np.ndarray,
    num_clients: int,
    scheme: str,
    seed: int,
    alpha: float = 1.0,
    shards_per_client: int = 2,
    quantity_sigma: float = 1.0,
    holdout_fraction: float = 0.2,
    min_samples_per_client: int = 8,
) -> Partition:
    """Share the pool over `num_clients` clients ("client-00", ...) by `scheme`.

    iid: a random equal split. dirichlet: each class's records go to the
    clients in proportions ~ Dir(alpha), redrawn until every client holds
    `min_samples_per_client`. shards: records sorted by label, cut into
    num_clients * shards_per_client shards, `shards_per_client` per client.
    quantity: IID labels, sizes min_samples_per_client plus a lognormal
    (0, quantity_sigma) share of the rest. Records outside the pool form the
    partition's test indices.
    """
    labels = _check_labels(labels)
    pool = _as_index_array(pool_indices, what="pool_indices")
    if pool.size and pool.max() >= labels.size:
        raise DataError(f"pool index {int(pool.max())} out of range for {labels.size} labels")
    if np.unique(pool).size != pool.size:
        raise DataError("pool_indices holds a duplicate")
    if scheme not in SCHEMES:
        raise DataError(f"unknown partition scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    if (
        isinstance(num_clients, bool)
        or not isinstance(num_clients, int | np.integer)
        or num_clients < 1
    ):
        raise DataError(f"num_clients must be a positive int, not {num_clients!r}")
    if not 0.0 <= holdout_fraction < 1.0:
        raise DataError(f"holdout_fraction must be in [0, 1), not {holdout_fraction}")
    if min_samples_per_client < 1:
        raise DataError("min_samples_per_client must be at least 1")
    if pool.size < num_clients * min_samples_per_client:
        raise DataError(
            f"the pool has {pool.size} records, fewer than {num_clients} clients x "
            f"{min_samples_per_client} (min_samples_per_client): use fewer clients"
        )
    rng = _rng(seed)
    num_clients = int(num_clients)
    params: dict[str, Any] = {
        "num_clients": num_clients,
        "holdout_fraction": float(holdout_fraction),
        "min_samples_per_client": int(min_samples_per_client),
    }
    if scheme == "iid":
        shares = np.array_split(rng.permutation(pool), num_clients)
    elif scheme == "dirichlet":
        if not (math.isfinite(alpha) and alpha > 0):
            raise DataError(f"alpha must be positive and finite, not {alpha}")
        params["alpha"] = float(alpha)
        shares = _dirichlet(pool, labels, num_clients, alpha, min_samples_per_client, rng)
    elif scheme == "shards":
        k = shards_per_client
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise DataError(f"shards_per_client must be a positive int, not {k!r}")
        if num_clients * k > pool.size:
            raise DataError(f"{num_clients * k} shards need at least as many records ({pool.size})")
        k = int(k)
        params["shards_per_client"] = k
        shares = _shards(pool, labels, num_clients, k, rng)
    else:
        if not (math.isfinite(quantity_sigma) and quantity_sigma >= 0):
            raise DataError(f"quantity_sigma must be finite and >= 0, not {quantity_sigma}")
        params["quantity_sigma"] = float(quantity_sigma)
        weights = rng.lognormal(0.0, quantity_sigma, size=num_clients)
        spare = pool.size - num_clients * min_samples_per_client
        sizes = min_samples_per_client + _apportion(spare, weights)
        shares = np.split(rng.permutation(pool), np.cumsum(sizes)[:-1])
    smallest = min(s.size for s in shares)
    if smallest < min_samples_per_client:
        raise DataError(
            f"scheme {scheme!r} leaves a client with {smallest} records "
            f"(min_samples_per_client={min_samples_per_client}): use fewer clients or shards"
        )
    clients = tuple(
        _client_split(f"client-{i:02d}", share, labels, holdout_fraction, rng)
        for i, share in enumerate(shares)
    )
    return Partition(
        scheme=scheme,
        params=params,
        seed=int(seed),
        test_indices=np.setdiff1d(np.arange(labels.size), pool),
        clients=clients,
        num_samples=int(labels.size),
    )


def _dirichlet(
    pool: np.ndarray,
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    min_samples: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    groups = _group_by_label(pool, labels)
    for _ in range(_DIRICHLET_TRIES):
        buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for group in groups:
            proportions = rng.dirichlet(np.full(num_clients, alpha))
            if not np.all(np.isfinite(proportions)) or proportions.sum() <= 0:
                continue  # numerical underflow at tiny alpha; this draw will be rejected below
            counts = _apportion(group.size, proportions)
            parts = np.split(rng.permutation(group), np.cumsum(counts)[:-1])
            for bucket, part in zip(buckets, parts, strict=True):
                bucket.append(part)
        shares = [np.concatenate(b) if b else np.zeros(0, np.int64) for b in buckets]
        if sum(s.size for s in shares) == pool.size and min(s.size for s in shares) >= min_samples:
            return shares
    raise DataError(
        f"no Dirichlet(alpha={alpha}) draw in {_DIRICHLET_TRIES} tries gave every one of "
        f"{num_clients} clients {min_samples} records: raise alpha, use fewer clients, "
        "or lower min_samples_per_client"
    )


def _shards(
    pool: np.ndarray, labels: np.ndarray, num_clients: int, k: int, rng: np.random.Generator
) -> list[np.ndarray]:
    shuffled = rng.permutation(pool)  # random order within each label
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_clients * k)
    owners = rng.permutation(num_clients * k).reshape(num_clients, k)
    return [np.concatenate([shards[s] for s in row]) for row in owners]


def _client_split(
    client_id: str,
    share: np.ndarray,
    labels: np.ndarray,
    holdout_fraction: float,
    rng: np.random.Generator,
) -> ClientSplit:
    """Stratified holdout: round(n * fraction) records (at least one when the
    fraction is positive, at most n - 1) shared over classes by largest remainder."""
    n = share.size
    n_hold = _round_half_up(n * holdout_fraction)
    if holdout_fraction > 0:
        n_hold = max(n_hold, 1)
    n_hold = min(n_hold, n - 1)
    groups = _group_by_label(share, labels)
    per_class = _apportion(n_hold, [g.size for g in groups])
    members, holdout = [], []
    for group, h in zip(groups, per_class, strict=True):
        shuffled = rng.permutation(group)
        holdout.append(shuffled[:h])
        members.append(shuffled[h:])
    return ClientSplit(
        client_id=client_id,
        member_indices=np.sort(np.concatenate(members)),
        holdout_indices=np.sort(np.concatenate(holdout)),
    )
