"""Client-level DP: the unit is one client's whole shared-model update.

Each sampled client clips its update to L2 norm S (`privacy.client_clip`) and
sends it with weight 1; the sum the aggregation releases carries noise, and the
server moves the model by that noisy sum over the EXPECTED number of clients
(q n), never the realised one (McMahan et al. 2018, DP-FedAvg). Neighbouring
runs differ in one client's update (its data replaced by none, the update 0):
add/remove of a client's contribution, sensitivity S. Who took part is not
protected: the aggregator sees the survivor list, as in every secure-aggregation
deployment; the guarantee covers what the released model reveals about a
client's data.

Two mechanisms, the same algebra as the record-level ones, so the existing
accountants analyse them with the client as the unit:

- ``gaussian`` (central): N(0, (z S)^2) per coordinate is added to the sum the
  protocol released, by the party that received it (the aggregator; on `tee`
  the simulated enclave's host). That party sees the noise-free sum: the
  guarantee holds against everyone downstream of it (the clients, whoever gets
  the model), not against it. A Poisson-subsampled Gaussian at q =
  federation.client_fraction over the rounds: a DPSGDEvent in all but name.
- ``skellam`` (distributed, through secagg): each client adds its Skellam share
  (securediff.privacy.skellam) to its integer-encoded update; secagg sums the
  shares, so no party ever sees a sum without noise, the aggregator included.
  The Poisson-subsampled Skellam mechanism: a DistributedSkellamEvent.

A record of a client is protected too: replacing one record replaces its
client's update by another within the clip, which the accountants analyse
directly under replace-one (the ledger composes client-level events into a
record's claim only where the record-level mechanisms leave no tighter view,
`securediff.privacy.ledger.artefact_composition`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from securediff.errors import ConfigError
from securediff.privacy.accountants import Composition, calibrate_noise_multiplier, compose

MECHANISMS: tuple[str, ...] = ("gaussian", "skellam")
NOISE_ADDED_BY: tuple[str, ...] = ("aggregator", "clients")


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be positive and finite, got {value}")
    return value


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ClientLevelEvent:
    """`steps` rounds of client-level DP on the shared model: every client clipped
    to `clip_norm`, sampled at `sample_rate`, the sum noised. gaussian:
    `noise_multiplier` = noise std / clip_norm. skellam: integer sensitivities and
    the variance that REACHED the sum (contributors * share variance), as
    DistributedSkellamEvent. `noise_added_by` says who holds a noise-free sum:
    "aggregator" (central) or "clients" (nobody)."""

    mechanism: str
    clip_norm: float
    sample_rate: float
    steps: int
    noise_added_by: str
    noise_multiplier: float | None = None
    l1_sensitivity: float | None = None
    l2_sensitivity: float | None = None
    noise_variance: float | None = None
    scale: float | None = None
    min_survivors: int | None = None
    relation: str = "add_remove"
    artefact: str = "shared"
    kind: ClassVar[str] = "client_level"
    unit: ClassVar[str] = "client"

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ConfigError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        if self.noise_added_by not in NOISE_ADDED_BY:
            raise ConfigError(f"noise_added_by must be one of {NOISE_ADDED_BY}, got {self.noise_added_by!r}")
        object.__setattr__(self, "clip_norm", _positive("clip_norm", self.clip_norm))
        q = float(self.sample_rate)
        if not 0.0 < q <= 1.0:
            raise ConfigError(f"sample_rate must be in (0, 1], got {q}")
        object.__setattr__(self, "sample_rate", q)
        object.__setattr__(self, "steps", _count("steps", self.steps))
        skellam = ("l1_sensitivity", "l2_sensitivity", "noise_variance", "scale")
        if self.mechanism == "gaussian":
            object.__setattr__(self, "noise_multiplier", _positive("noise_multiplier", self.noise_multiplier))
            if any(getattr(self, name) is not None for name in (*skellam, "min_survivors")):
                raise ConfigError("a gaussian client-level event has no Skellam fields")
        else:
            for name in skellam:
                object.__setattr__(self, name, _positive(name, getattr(self, name)))
            object.__setattr__(self, "min_survivors", _count("min_survivors", self.min_survivors))
            if self.noise_multiplier is not None:
                raise ConfigError("a skellam client-level event takes its noise from noise_variance")
            if self.noise_added_by != "clients":
                raise ConfigError("Skellam shares are added by the clients")
        if self.relation != "add_remove":
            raise ConfigError(f"ClientLevelEvent.relation must be 'add_remove', got {self.relation!r}")
        if self.artefact != "shared":
            raise ConfigError(f"ClientLevelEvent.artefact must be 'shared', got {self.artefact!r}")

    def as_mechanism(self) -> Any:
        """The same mechanism as the record-level event the accountants read."""
        from securediff.privacy.ledger import DistributedSkellamEvent, DPSGDEvent

        if self.mechanism == "gaussian":
            return DPSGDEvent(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate,
                              steps=self.steps, artefact="shared")
        return DistributedSkellamEvent(
            l1_sensitivity=self.l1_sensitivity, l2_sensitivity=self.l2_sensitivity,
            noise_variance=self.noise_variance, sample_rate=self.sample_rate, steps=self.steps,
            artefact="shared", scale=self.scale, min_survivors=self.min_survivors)

    def same_mechanism(self, other: object) -> bool:
        """True if `other` is this mechanism with possibly another number of rounds."""
        return isinstance(other, ClientLevelEvent) and all(
            getattr(self, f.name) == getattr(other, f.name) for f in fields(self) if f.name != "steps")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{k: v for k, v in asdict(self).items() if v is not None}}


def is_client_level(event: Any) -> bool:
    return getattr(event, "unit", "record") == "client"


def client_level_composition(events: list[Any], *, delta: float, accountant: str) -> Composition:
    """Epsilon of the add/remove of one client over its client-level events."""
    mine = [e.as_mechanism() for e in events if is_client_level(e)]
    if not mine:
        return Composition(math.inf, "add_remove", "direct")
    return compose(mine, delta=delta, accountant=accountant, relation="add_remove")


def client_level_epsilon(events: list[Any], *, delta: float, accountant: str) -> float:
    return client_level_composition(events, delta=delta, accountant=accountant).epsilon


def calibrate_client_gaussian(*, target_epsilon: float, sample_rate: float, rounds: int, delta: float,
                              accountant: str) -> float:
    """The smallest noise multiplier whose `rounds` rounds meet the client-level target."""
    return calibrate_noise_multiplier(target_epsilon=target_epsilon, sample_rate=sample_rate,
                                      steps=rounds, delta=delta, accountant=accountant)


def client_level_claim(events: list[Any], *, delta: float) -> dict[str, Any]:
    """The client-level claim as the ledger summary shows it: the tightest
    accountant that analyses the events, add/remove of one client's update."""
    from securediff.privacy.accountants import ACCOUNTANTS, AccountantUnsupportedError

    found: dict[str, float] = {}
    for name in ACCOUNTANTS:
        try:
            found[name] = client_level_epsilon(events, delta=delta, accountant=name)
        except AccountantUnsupportedError:
            continue
    best = min(found, key=found.__getitem__)
    return {"epsilon": found[best], "accountant": best, "relation": "add_remove",
            "unit": "client", "by_accountant": found}
