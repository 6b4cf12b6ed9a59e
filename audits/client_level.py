"""Client-level audit through secure aggregation: the one-shot estimate of
Andrew et al., "One-shot Empirical Privacy Estimation for Federated Learning"
(ICLR 2024), with all iterates observed.

Canary clients send fixed random directions (unit vectors in parameter space,
scaled to the clip norm, drawn from an injected generator) in every round of a
client-level DP run, next to the real clients, through the run's aggregation
code (`securediff.federation.client_level.ClientLevelRound`) and a real
protocol round (`protocols.run_round`). The auditor sees only what each round
released (the noisy sums the model moves by), never an individual update. For
each canary, inserted or never inserted, the statistic is the sum over rounds
(or the max) of the cosine between its direction and the round's release. The
two sets of statistics are fitted by Gaussians N(mu_in, s^2) and N(mu_out, s^2)
(s pooled); the estimate is the epsilon at the run's delta of the Gaussian
mechanism with mu = (mu_in - mu_out) / s.

It is an ESTIMATE, not a lower bound: no confidence interval makes it one. It is
close to the accountant's bound only where the bound is tight for this
adversary: every client in every round (no subsampling amplification the
adversary cannot see), server learning rate 1 and no server momentum (each
release is the round's noisy sum itself), and a dimension large against the
number of canaries (their directions then nearly orthogonal).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from protocols import Identities, make_protocol, run_round
from securediff.federation.client_level import ClientLevelPlan, ClientLevelRound
from securediff.privacy.accountants import gaussian_epsilon
from securediff.privacy.client_level import client_level_epsilon
from securediff.rng import RandomSource

__all__ = ["ClientLevelAudit", "audit_synthetic_run", "canary_directions", "estimate_epsilon",
           "least_squares_clients", "run_canary_audit"]

STATISTICS = ("sum", "max")


@dataclass(frozen=True)
class ClientLevelAudit:
    estimate: float  # epsilon of the fitted Gaussian mechanism: an estimate, not a bound
    claimed: float | None  # the accountant's client-level epsilon (None: noise off)
    mu: float
    mu_in: float
    mu_out: float
    sigma: float
    canaries_in: int
    canaries_out: int
    rounds: int
    real_clients: int
    dim: int
    delta: float
    statistic: str
    protocol: str
    mechanism: str
    noise_multiplier: float = 0.0
    kind: str = "estimate, not a lower bound (Andrew et al. 2024, all iterates)"

    def to_dict(self) -> dict:
        return asdict(self)


def canary_directions(count: int, dim: int, generator: np.random.Generator) -> np.ndarray:
    """`count` independent directions uniform on the unit sphere, one per row."""
    g = generator.standard_normal((count, dim))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def estimate_epsilon(stats_in: np.ndarray, stats_out: np.ndarray, *, delta: float) -> tuple[float, float, float, float, float]:
    """(epsilon, mu, mu_in, mu_out, s): Gaussians with a pooled s fitted to the
    statistics of inserted and of never-inserted canaries."""
    a, b = np.asarray(stats_in, dtype=np.float64), np.asarray(stats_out, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError("the estimate needs at least two canaries of each kind")
    mu_in, mu_out = float(a.mean()), float(b.mean())
    s = math.sqrt((a.var(ddof=1) * (a.size - 1) + b.var(ddof=1) * (b.size - 1)) / (a.size + b.size - 2))
    mu = (mu_in - mu_out) / s if s > 0 else math.inf
    return gaussian_epsilon(mu=max(mu, 0.0), delta=delta), mu, mu_in, mu_out, s


def _cosines(directions: np.ndarray, release: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(release))
    return directions @ release / norm if norm > 0 else np.zeros(directions.shape[0])


def run_canary_audit(
    *,
    plan: ClientLevelPlan,
    real_updates: Callable[[int, np.ndarray], dict[str, np.ndarray]],
    initial: np.ndarray,
    canaries_in: int,
    canaries_out: int,
    rounds: int,
    delta: float,
    generator: np.random.Generator,
    source: RandomSource,
    protocol: str = "secagg",
    statistic: str = "sum",
    accountant: str = "pld",
) -> ClientLevelAudit:
    """Run `rounds` rounds of client-level DP aggregation with `canaries_in`
    canary clients and return the estimate. `real_updates(round, model)` gives the
    real clients' updates (client id -> vector) from the current model; the model
    moves by each round's step (server learning rate 1, no momentum). `plan` must
    count the canaries among its clients, at sample rate 1."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    if plan.sample_rate != 1.0:
        raise ValueError("the audit needs every client in every round (sample rate 1)")
    dim = int(initial.size)
    directions = canary_directions(canaries_in + canaries_out, dim, generator)
    inserted = {f"canary-{i:04d}": plan.clip * directions[i] for i in range(canaries_in)}
    model = np.asarray(initial, dtype=np.float64).copy()
    aggregation = ClientLevelRound(plan)
    per_round = []
    real_count = 0
    identities = None
    for r in range(rounds):
        updates = {**real_updates(r, model.copy()), **inserted}
        real_count = len(updates) - canaries_in
        if identities is None:
            identities = Identities.generate(sorted(updates))
            bound = make_protocol(protocol, **plan.protocol_params()).bind(identities)
        sources = {cid: source.child(f"client/{cid}/round-{r}") for cid in updates}
        inputs = aggregation.inputs(updates, sources)
        result = run_round(bound, round_index=r, inputs=inputs, identities=identities, transcript=None,
                           random_bytes=source.child(f"protocol/round-{r}").random_bytes)
        noisy = aggregation.noisy_sum(result.weighted_sum, contributors=len(result.contributors),
                                      noise_source=source.child(f"aggregator/round-{r}"))
        step = aggregation.step(noisy)
        per_round.append(_cosines(directions, step))  # all the auditor reads: the release
        model += step
    cos = np.stack(per_round)  # rounds x canaries
    stats = cos.sum(axis=0) if statistic == "sum" else cos.max(axis=0)
    eps, mu, mu_in, mu_out, s = estimate_epsilon(stats[:canaries_in], stats[canaries_in:], delta=delta)
    if plan.mechanism == "skellam":
        accountant = "rdp"  # the only accountant of the Skellam mechanism
    claimed = (client_level_epsilon([plan.event(rounds=rounds, contributors=plan.num_clients)], delta=delta,
                                    accountant=accountant) if plan.noise_multiplier > 0 else None)
    return ClientLevelAudit(estimate=eps, claimed=claimed, mu=mu, mu_in=mu_in, mu_out=mu_out, sigma=s,
                            canaries_in=canaries_in, canaries_out=canaries_out, rounds=rounds,
                            real_clients=real_count, dim=dim, delta=delta, statistic=statistic,
                            protocol=protocol, mechanism=plan.mechanism,
                            noise_multiplier=plan.noise_multiplier)


def least_squares_clients(*, clients: int, dim: int, records: int, local_steps: int, lr: float,
                          generator: np.random.Generator) -> Callable[[int, np.ndarray], dict[str, np.ndarray]]:
    """Real clients of a small model: each holds `records` rows of a linear
    regression problem (its own true weights, label skew's stand-in) and returns
    the change of `local_steps` gradient steps from the current model."""
    data = []
    for _ in range(clients):
        x = generator.standard_normal((records, dim)) / math.sqrt(dim)
        w = generator.standard_normal(dim)
        data.append((x, x @ w + 0.1 * generator.standard_normal(records)))

    def updates(_round: int, model: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for i, (x, y) in enumerate(data):
            w = model.copy()
            for _ in range(local_steps):
                w -= lr * x.T @ (x @ w - y) / records
            out[f"client-{i:03d}"] = w - model
        return out

    return updates


def audit_synthetic_run(*, mechanism: str = "gaussian", client_epsilon: float | None = 8.0, canaries: int = 200,
                        canaries_out: int = 2000, dim: int = 8192, rounds: int = 5, real_clients: int = 10,
                        delta: float = 1e-5, protocol: str = "secagg", statistic: str = "sum",
                        generator: np.random.Generator, source: RandomSource) -> ClientLevelAudit:
    """The audit of a client-level run of `real_clients` least-squares clients plus
    the canaries, every client in every round, noise calibrated to `client_epsilon`
    over the rounds (None: the noise off, the control that must be flagged)."""
    from securediff.errors import ConfigError
    from securediff.federation.client_level import plan_client_level
    from securediff.privacy.client_level import MECHANISMS

    if mechanism not in MECHANISMS:
        raise ConfigError(f"--mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    real = least_squares_clients(clients=real_clients, dim=dim, records=50, local_steps=5, lr=0.5,
                                 generator=generator)
    n = real_clients + canaries
    if client_epsilon is None:
        plan = ClientLevelPlan("gaussian", 1.0, 0.0, 1.0, n, rounds)
    else:
        plan = plan_client_level(mechanism=mechanism, clip=1.0, target_epsilon=client_epsilon,
                                 noise_multiplier=None, sample_rate=1.0, num_clients=n, rounds=rounds,
                                 delta=delta, dim=dim, accountant="pld", min_survivors=n)
    return run_canary_audit(plan=plan, real_updates=real, initial=np.zeros(dim), canaries_in=canaries,
                            canaries_out=canaries_out, rounds=rounds, delta=delta, generator=generator,
                            source=source, protocol=protocol, statistic=statistic)
