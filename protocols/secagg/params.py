"""The parameters of secagg and the analysis that decides which are allowed.

Notation: n clients in the round; each client's secrets (self-mask seed b and
pairwise-mask key sk) are Shamir-shared among its k graph neighbours and
itself (k + 1 shareholders, Flower's convention); any t shares give a secret
back. The graph is a randomly permuted Harary graph H(n, k) (Bell et al., CCS
2020); k >= n - 1 is the complete graph of classic SecAgg (Bonawitz et al., CCS
2017), where the threshold is the global t.

Security (threshold rule, always enforced). An honest shareholder answers the
aggregator at most once per round and reveals, for each owner, the b share or
the sk share, never both. To hold b and sk of one owner the aggregator needs t
shares of each, so with c colluding shareholders it needs 2t <= k + 1 + c.
Allowed thresholds are therefore (k + 1 + c_max) / 2 < t <= k, where c_max is
0 under the default threat model (honest clients; DESIGN.md) and otherwise the
number of colluding neighbours that is exceeded with probability at most
2^-security_bits when a `collusion_fraction` of clients is corrupt (union
bound over clients, hypergeometric tail). t <= k lets a client that dropped
(and so cannot hand over its own share) still be recovered.

Security (graph). The aggregator learns the sum of each connected component of
the survivors' mask graph. Honest clients check the survivor list before they
unmask and refuse when it is disconnected, so with honest clients the release
is the total and nothing else, whatever k. With colluding clients the graph of
honest survivors cannot be checked; H(n, k) minus a random set of removed
nodes is disconnected only if two disjoint runs of k/2 consecutive positions
are removed, so P <= n^2/2 * ((C + D)/n)^k, which must be <= 2^-security_bits.

Correctness (what the default degree is chosen for). A round recovers every
client that needs it when no client loses more than k - t of its neighbours.
With D = ceil(dropout_tolerance * n) clients dropping at random, the failure
probability is at most n * P[Hypergeometric(n - 1, D, k) > k - t]. The default
k is the smallest even k whose failure bound is <= 2^-correctness_bits (with
the smallest allowed t); if none is, the complete graph. Examples
(dropout_tolerance 0.2, 20 bits): n = 10 -> k = 6, t = 4; n = 50 -> 22, 12;
n = 100 -> 38, 20; n = 1000 -> 76, 39. Correctness is not enforced on
configured values: a fragile setting only aborts more rounds.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from protocols.errors import ProtocolInputError
from protocols.hazmat.quantize import FixedPoint

MIN_CLIENTS = 3


@dataclass(frozen=True)
class SecAggParams:
    """Constructor parameters (validated); `degree`/`threshold` 0 mean "the secure default"."""

    degree: int = 0
    threshold: int = 0
    consistency_check: bool = True
    clip_range: float = 64.0
    value_bits: int = 32
    max_weight: float = float(1 << 20)
    weight_frac_bits: int = 0
    dropout_tolerance: float = 0.2
    correctness_bits: int = 20
    collusion_fraction: float = 0.0
    security_bits: int = 40
    # Distributed DP: each client adds noise for this many contributors, so an
    # aggregate of fewer would carry less noise than the ledger planned for.
    # Honest clients refuse to unmask such a round; 0 = no floor.
    min_contributors: int = 0

    def __post_init__(self) -> None:
        for name in ("degree", "threshold", "value_bits", "weight_frac_bits", "min_contributors"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 0:
                raise ProtocolInputError(f"secagg: {name} must be an int >= 0")
        if self.degree == 1:
            raise ProtocolInputError("secagg: degree must be 0 (default) or >= 2")
        if type(self.consistency_check) is not bool:
            raise ProtocolInputError("secagg: consistency_check must be true or false")
        for name, lo, hi in (("dropout_tolerance", 0.0, 0.5), ("collusion_fraction", 0.0, 0.5)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value < hi:
                raise ProtocolInputError(f"secagg: {name} must be a number in [{lo}, {hi})")
        for name in ("correctness_bits", "security_bits"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= 128:
                raise ProtocolInputError(f"secagg: {name} must be an int in [1, 128]")
        if self.threshold and self.degree and not self.threshold <= self.degree:
            raise ProtocolInputError("secagg: threshold must be <= degree (see docs/secagg.md)")
        _ = self.fixed  # FixedPoint validates the quantization settings

    @property
    def fixed(self) -> FixedPoint:
        return FixedPoint(
            clip_range=self.clip_range,
            value_bits=self.value_bits,
            max_weight=self.max_weight,
            weight_frac_bits=self.weight_frac_bits,
        )


@dataclass(frozen=True)
class GraphPlan:
    """The resolved neighbour count and threshold for a round of n clients."""

    n: int
    degree: int
    threshold: int

    @property
    def complete(self) -> bool:
        return self.degree >= self.n - 1


def _log2(p: float) -> float:
    return math.log2(p) if p > 0 else -math.inf


def hypergeom_tail(population: int, marked: int, draws: int, at_least: int) -> float:
    """P[X >= at_least] for X ~ Hypergeometric(population, marked, draws), exactly."""
    if at_least <= 0:
        return 1.0
    hi = min(marked, draws)
    if at_least > hi:
        return 0.0
    num = sum(
        math.comb(marked, i) * math.comb(population - marked, draws - i)
        for i in range(at_least, hi + 1)
    )
    return num / math.comb(population, draws)


def correctness_log2(n: int, k: int, t: int, dropout: float) -> float:
    """log2 of the bound on P[some client loses more than k - t neighbours]."""
    dropped = min(n - 1, math.ceil(dropout * n))
    return _log2(n * hypergeom_tail(n - 1, dropped, k, k - t + 1))


def security_log2(n: int, k: int, t: int, collusion: float, dropout: float) -> float:
    """log2 of the bound on the failure of the threshold or graph argument with colluders."""
    corrupt = math.ceil(collusion * n)
    if corrupt == 0:
        return -math.inf
    both_shares = n * hypergeom_tail(n - 1, corrupt, k, 2 * t - k - 1)
    removed = min(n, corrupt + math.ceil(dropout * n))
    disconnect = 0.0 if k >= n - 1 else n * n / 2 * (removed / n) ** k
    return _log2(both_shares + disconnect)


def signer_quorum(n: int, colluders: int) -> int:
    """The fewest signers of one survivor list such that no second list can have as
    many: honest clients sign one list each and colluders any number, so two lists of
    q signers each need 2q - colluders <= n; q = floor((n + colluders) / 2) + 1 rules
    that out. n counts the clients whose keys were routed."""
    return (n + colluders) // 2 + 1


def lowest_threshold(k: int) -> int:
    """The smallest t with 2t > k + 1: honest shareholders cannot give both secrets."""
    return (k + 1) // 2 + 1


def _allowed(n: int, k: int, t: int, p: SecAggParams) -> str | None:
    if not lowest_threshold(k) <= t <= k:
        return (
            f"threshold {t} with {k} neighbours: the analysis allows "
            f"{lowest_threshold(k)} <= t <= {k} (2t > k + 1 so that no owner's two "
            "secrets can both be rebuilt; t <= k so that a dropped client can be)"
        )
    if security_log2(n, k, t, p.collusion_fraction, p.dropout_tolerance) > -p.security_bits:
        return (
            f"(k={k}, t={t}) at n={n} with collusion_fraction {p.collusion_fraction} fails the "
            f"{p.security_bits}-bit security bound; raise degree and threshold"
        )
    return None


def _smallest_secure_t(n: int, k: int, p: SecAggParams) -> int | None:
    for t in range(lowest_threshold(k), k + 1):
        if _allowed(n, k, t, p) is None:
            return t
    return None


@functools.lru_cache(maxsize=256)
def plan_graph(n: int, p: SecAggParams) -> GraphPlan:
    """Resolve (degree, threshold) for n clients, refusing what the analysis forbids."""
    if type(n) is not int or n < MIN_CLIENTS:
        raise ProtocolInputError(f"secagg needs at least {MIN_CLIENTS} clients in a round, got {n}")
    if p.degree:
        k = min(p.degree, n - 1)
        if k < n - 1 and k % 2:
            raise ProtocolInputError(
                f"secagg: degree {p.degree} below n - 1 = {n - 1} must be even (Harary graph)"
            )
    else:
        k = default_degree(n, p)
    t = p.threshold or _smallest_secure_t(n, k, p)
    if t is None:
        raise ProtocolInputError(
            f"secagg: no threshold is secure with {k} neighbours at n={n} under "
            f"collusion_fraction {p.collusion_fraction}"
        )
    why = _allowed(n, k, t, p)
    if why is not None:
        raise ProtocolInputError(f"secagg: {why}")
    return GraphPlan(n=n, degree=k, threshold=t)


def default_degree(n: int, p: SecAggParams) -> int:
    """The smallest even k meeting the correctness target (else the complete graph)."""
    for k in range(2, n - 1, 2):
        t = _smallest_secure_t(n, k, p)
        if t is not None and correctness_log2(n, k, t, p.dropout_tolerance) <= -p.correctness_bits:
            return k
    return n - 1
