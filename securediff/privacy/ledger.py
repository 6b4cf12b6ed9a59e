"""A client's privacy ledger: mechanism events as frozen data, epsilon recomputed
from them by a named accountant (events in, epsilon out, nothing hidden).

Each event names the neighbouring relation its analysis holds under and the
released artefact it is paid for ("shared": the shared denoiser and its
updates; "personal": the personal denoiser and what it generates). The ledger
is write-ahead: a mechanism is charged before it runs, and `charge` refuses
(leaving the ledger unchanged) when the artefact would pass its budget.

Releases. An artefact may be released more than once from the same noised data
x~ (a Flower node keeps x~ and its ledger across runs; a run is resumed). Its
claim is the epsilon of ALL its releases taken jointly, never of the latest one:

- every release is a post-processing of x~ (and of the other mechanisms' outputs),
  so all of them together cost at most the forward-noise view: the composition of
  every event but the DP-SGD steps that trained on x~;
- DP-SGD on x~ gives a second view only of releases made of those steps: if EVERY
  release read x~ only through DP-SGD steps, they are together a post-processing
  of all those steps (composed) and the other events but the forward noise and
  the randomized labels, and the smaller of the two views holds (the rule of
  `artefact_composition`, sound for such a set as for one release);
- a release that read x~ directly (plain PFDM) is covered by the forward-noise
  view only, so once one is made the claim is the forward-noise view, whatever
  DP-SGD later runs add.

A ledger that records no release holds one run's events (an in-process run
directory; a resume continues the same run with its pinned config): its
releases are read from its events, as that run made them. Releases are recorded
after the steps they are made of are charged and before anything leaves, so
from its first release on an artefact's claim never decreases
(docs/privacy_ledger.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Literal

from securediff.errors import BudgetExceededError, CheckpointError, ConfigError, PrivacyError
from securediff.privacy.accountants import (
    ACCOUNTANTS,
    AccountantUnsupportedError,
    Composition,
    check_accountant,
    compose,
)
from securediff.privacy.client_level import ClientLevelEvent, client_level_claim, is_client_level

Relation = Literal["replace_one", "add_remove"]
Artefact = Literal["shared", "personal"]
ARTEFACTS: tuple[str, ...] = ("shared", "personal")
LEDGER_FORMAT = 1


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be positive and finite, got {value}")
    return value


def _fixed(event: Any, field: str, expected: str) -> None:
    if getattr(event, field) != expected:
        raise ConfigError(
            f"{type(event).__name__}.{field} must be {expected!r}, got {getattr(event, field)!r}"
        )


def _relation(event: Any) -> None:
    if event.relation not in ("add_remove", "replace_one"):
        raise ConfigError(f"{type(event).__name__}.relation must be 'add_remove' or 'replace_one', "
                          f"got {event.relation!r}")


def _artefact(value: str) -> None:
    if value not in ARTEFACTS:
        raise ConfigError(f"unknown artefact {value!r}; expected one of {ARTEFACTS}")


@dataclass(frozen=True)
class ForwardNoiseEvent:
    """Clip to L2 norm C, add N(0, sigma^2) once (in the scale of the clipped
    image): a replace-one Gaussian mechanism with sensitivity 2C."""

    sigma: float
    clip_norm: float
    t0: int
    data_id: str
    relation: Relation = "replace_one"
    artefact: Artefact = "shared"
    kind: ClassVar[str] = "forward_noise"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", _positive("sigma", self.sigma))
        object.__setattr__(self, "clip_norm", _positive("clip_norm", self.clip_norm))
        if isinstance(self.t0, bool) or int(self.t0) != self.t0 or self.t0 < 1:
            raise ConfigError(f"t0 must be a positive integer, got {self.t0!r}")
        object.__setattr__(self, "t0", int(self.t0))
        if not isinstance(self.data_id, str) or not self.data_id:
            raise ConfigError("data_id must be a non-empty string")
        _fixed(self, "relation", "replace_one")
        _artefact(self.artefact)

    @property
    def sensitivity(self) -> float:
        return 2.0 * self.clip_norm

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class DPSGDEvent:
    """`steps` compositions of a Poisson-subsampled Gaussian (rate q, noise
    multiplier sigma relative to the clip norm), under add/remove.

    With adaptive per-sample clipping (`count_noise` set) each step also
    releases the batch's count of unclipped samples, centred (b - 1/2, so a
    record moves it by 1/2) plus N(0, count_noise^2). `noise_multiplier` is
    then the multiplier of the two releases together, which is what the
    accountants compose (Andrew et al. 2021, Thm 1: z^-2 = z_grad^-2 + (2
    count_noise)^-2); `securediff.privacy.adaptive.split_noise` gives z_grad.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    artefact: Artefact
    relation: Relation = "add_remove"
    count_noise: float | None = None
    # "noised": the steps trained on PFDM's once-noised data x~ only, never on raw
    # records, so the artefact is ALSO a post-processing of x~ (PrivacyLedger.epsilon).
    input: str = "raw"
    kind: ClassVar[str] = "dpsgd"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "noise_multiplier", _positive("noise_multiplier", self.noise_multiplier)
        )
        q = float(self.sample_rate)
        if not 0.0 < q <= 1.0:
            raise ConfigError(f"sample_rate must be in (0, 1], got {q}")
        object.__setattr__(self, "sample_rate", q)
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))
        _fixed(self, "relation", "add_remove")
        _artefact(self.artefact)
        if self.input not in ("raw", "noised"):
            raise ConfigError(f"input must be 'raw' or 'noised', got {self.input!r}")
        if self.count_noise is not None:
            count = _positive("count_noise", self.count_noise)
            if not 2.0 * count > self.noise_multiplier:
                raise ConfigError(
                    f"count_noise {count} leaves no noise for the gradients: the joint "
                    f"multiplier {self.noise_multiplier} needs count_noise > {self.noise_multiplier / 2}"
                )
            object.__setattr__(self, "count_noise", count)

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind, **asdict(self)}
        if self.count_noise is None:  # fixed clipping: the format as before
            del data["count_noise"]
        if self.input == "raw":  # the format as before
            del data["input"]
        return data


@dataclass(frozen=True)
class QuantileCountEvent:
    """`steps` counts of a client's records below a candidate norm, each plus
    N(0, noise_std^2) drawn by the client: a private quantile of its records'
    norms. A replaced record moves a count by at most 1, so each count is a
    replace-one Gaussian with sensitivity 1 (data-aware clipping, adaptive.py)."""

    noise_std: float
    steps: int
    data_id: str
    relation: Relation = "replace_one"
    artefact: Artefact = "shared"
    kind: ClassVar[str] = "quantile_count"

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_std", _positive("noise_std", self.noise_std))
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))
        if not isinstance(self.data_id, str) or not self.data_id:
            raise ConfigError("data_id must be a non-empty string")
        _fixed(self, "relation", "replace_one")
        _artefact(self.artefact)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class RandomizedResponseEvent:
    """k-ary randomized response on labels: pure epsilon-DP under replace-one."""

    epsilon: float
    num_classes: int
    relation: Relation = "replace_one"
    artefact: Artefact = "shared"
    kind: ClassVar[str] = "randomized_response"

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", _positive("epsilon", self.epsilon))
        k = self.num_classes
        if isinstance(k, bool) or int(k) != k or k < 2:
            raise ConfigError(f"num_classes must be an integer >= 2, got {k!r}")
        object.__setattr__(self, "num_classes", int(k))
        _fixed(self, "relation", "replace_one")
        _artefact(self.artefact)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class DistributedSkellamEvent:
    """`steps` compositions of the Poisson-subsampled multi-dimensional Skellam
    mechanism of distributed DP (securediff.privacy.skellam), under add/remove:
    integer sensitivities (L1, L2), and `noise_variance`, the variance per
    coordinate that REACHED the aggregate (survivors * share variance; the
    dropouts' shares are missing). `scale` (gamma) and `min_survivors` (the
    planned noise floor) are kept for the record; the accountant reads only
    the sensitivities, the variance, q and steps."""

    l1_sensitivity: float
    l2_sensitivity: float
    noise_variance: float
    sample_rate: float
    steps: int
    artefact: Artefact
    scale: float
    min_survivors: int
    relation: Relation = "add_remove"
    kind: ClassVar[str] = "distributed_skellam"

    def __post_init__(self) -> None:
        for name in ("l1_sensitivity", "l2_sensitivity", "noise_variance", "scale"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        q = float(self.sample_rate)
        if not 0.0 < q <= 1.0:
            raise ConfigError(f"sample_rate must be in (0, 1], got {q}")
        object.__setattr__(self, "sample_rate", q)
        for name in ("steps", "min_survivors"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        _fixed(self, "relation", "add_remove")
        _artefact(self.artefact)

    def same_mechanism(self, other: object) -> bool:
        """True if `other` is this mechanism with possibly another step count."""
        return isinstance(other, DistributedSkellamEvent) and all(
            getattr(self, f.name) == getattr(other, f.name) for f in fields(self) if f.name != "steps"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class GaussianReleaseEvent:
    """One release of a vector plus N(0, noise_std^2) per coordinate, every record
    used once (no subsampling): a Gaussian mechanism under add/remove with L2
    sensitivity `l2_sensitivity`, and `l2_replace_one` the shift bound under a
    replaced record (between l2 and 2 l2), which the replace-one analysis uses
    instead of doubling (securediff.privacy.stats_release). `relation`: the relation
    the release was calibrated for and its claim is stated under; the accountant
    analyses it under that relation directly (under replace-one with
    `l2_replace_one`)."""

    noise_std: float
    l2_sensitivity: float
    l2_replace_one: float
    artefact: Artefact
    relation: Relation = "add_remove"
    kind: ClassVar[str] = "gaussian_release"

    def __post_init__(self) -> None:
        for name in ("noise_std", "l2_sensitivity", "l2_replace_one"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        if not self.l2_sensitivity <= self.l2_replace_one <= 2.0 * self.l2_sensitivity:
            raise ConfigError("l2_replace_one must lie between l2_sensitivity and twice it")
        _relation(self)
        _artefact(self.artefact)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class SkellamReleaseEvent:
    """One release through Skellam shares summed by secagg, every record used once:
    the multi-dimensional Skellam mechanism (no subsampling) under add/remove with
    integer sensitivities (l1, l2), and their replace-one bounds; `noise_variance`
    reached the sum (survivors * share variance). `scale` and `min_survivors` are
    kept for the record (securediff.privacy.stats_release). `relation` as for
    GaussianReleaseEvent: under replace-one the accountant reads the replace-one
    sensitivities directly."""

    l1_sensitivity: float
    l2_sensitivity: float
    l1_replace_one: float
    l2_replace_one: float
    noise_variance: float
    artefact: Artefact
    scale: float
    min_survivors: int
    relation: Relation = "add_remove"
    kind: ClassVar[str] = "skellam_release"

    def __post_init__(self) -> None:
        for name in ("l1_sensitivity", "l2_sensitivity", "l1_replace_one", "l2_replace_one",
                     "noise_variance", "scale"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        value = self.min_survivors
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ConfigError(f"min_survivors must be a positive integer, got {value!r}")
        object.__setattr__(self, "min_survivors", int(value))
        for ar, ro in (("l1_sensitivity", "l1_replace_one"), ("l2_sensitivity", "l2_replace_one")):
            if not getattr(self, ar) <= getattr(self, ro) <= 2.0 * getattr(self, ar):
                raise ConfigError(f"{ro} must lie between {ar} and twice it")
        _relation(self)
        _artefact(self.artefact)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


MechanismEvent = (
    ForwardNoiseEvent
    | DPSGDEvent
    | RandomizedResponseEvent
    | QuantileCountEvent
    | DistributedSkellamEvent
    | ClientLevelEvent
    | GaussianReleaseEvent
    | SkellamReleaseEvent
)
EVENT_TYPES: dict[str, type[MechanismEvent]] = {
    cls.kind: cls
    for cls in (
        ForwardNoiseEvent,
        DPSGDEvent,
        RandomizedResponseEvent,
        QuantileCountEvent,
        DistributedSkellamEvent,
        ClientLevelEvent,
        GaussianReleaseEvent,
        SkellamReleaseEvent,
    )
}


def event_from_dict(data: dict[str, Any]) -> MechanismEvent:
    """Rebuild an event from `to_dict` output; CheckpointError if malformed."""
    if not isinstance(data, dict) or data.get("kind") not in EVENT_TYPES:
        raise CheckpointError(f"not a mechanism event: {data!r}")
    cls = EVENT_TYPES[data["kind"]]
    names = {f.name for f in fields(cls)}
    extra = set(data) - names - {"kind"}
    if extra:
        raise CheckpointError(f"{cls.__name__}: unexpected fields {sorted(extra)}")
    try:
        return cls(**{k: v for k, v in data.items() if k != "kind"})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid {cls.__name__}: {exc}") from None


def artefact_epsilon(events: list[MechanismEvent], *, delta: float, accountant: str) -> float:
    """Epsilon of one artefact from its events (`artefact_composition`)."""
    return artefact_composition(events, delta=delta, accountant=accountant).epsilon


def artefact_composition(events: list[MechanismEvent], *, delta: float, accountant: str) -> Composition:
    """Epsilon of one artefact from its events, with its relation and method.

    Usually the composition of all of them. When DP-SGD trained on PFDM's noised
    data x~ only (`DPSGDEvent.input == "noised"`), the artefact is a post-processing
    of two different views, and each bounds it on its own, so the smaller counts:
    (1) the mechanisms that made x~ and the labels (everything but those DP-SGD
    steps), and (2) those DP-SGD steps with whatever else was released (everything
    but the forward noise and the randomized labels, which are only ever read by
    the steps: for any fixed draw of that noise, neighbouring records give
    neighbouring x~, and divergences of mixtures are bounded by the worst draw).
    Both views are taken under the relation of the whole set (replace-one when
    forward noise is there), so the claim names one relation.

    Client-level events (`securediff.privacy.client_level`) clip and noise an
    update that is already a function of the record-level mechanisms' outputs, so
    those alone still bound a record; the client-level mechanism, read with the
    record as the unit (a changed record moves its client's update within the clip:
    replace-one), bounds it too, composed with the rest. The smaller counts; with no
    record-level event, the second is the only view."""
    if any(is_client_level(e) for e in events):
        records = [e for e in events if not is_client_level(e)]
        both = [e.as_mechanism() if is_client_level(e) else e for e in events]
        views = [artefact_composition(records, delta=delta, accountant=accountant)] if records else []
        try:
            views.append(compose(both, delta=delta, accountant=accountant, relation="replace_one"))
        except AccountantUnsupportedError:
            if not views:
                raise
        return min(views, key=lambda c: c.epsilon)
    on_noised = [e for e in events if isinstance(e, DPSGDEvent) and e.input == "noised"]
    if not on_noised:
        return compose(events, delta=delta, accountant=accountant)
    relation = "replace_one" if any(e.relation == "replace_one" for e in events) else "add_remove"
    made_x = [e for e in events if not (isinstance(e, DPSGDEvent) and e.input == "noised")]
    trained = [e for e in events if not isinstance(e, ForwardNoiseEvent | RandomizedResponseEvent)]
    views = [compose(v, delta=delta, accountant=accountant, relation=relation)
             for v in (made_x, trained) if v]
    return min(views, key=lambda c: c.epsilon)


@dataclass(frozen=True)
class Release:
    """One run's releases of an artefact (its updates and final model) from this
    client's data. `through_dpsgd_only`: the run read x~ only through DP-SGD steps
    on it (`DPSGDEvent.input == "noised"`), so the DP-SGD view covers it too."""

    run_id: str
    artefact: Artefact
    through_dpsgd_only: bool

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not self.run_id:
            raise ConfigError("run_id must be a non-empty string")
        _artefact(self.artefact)
        if not isinstance(self.through_dpsgd_only, bool):
            raise ConfigError("through_dpsgd_only must be a bool")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dpsgd_on_noised(event: MechanismEvent) -> bool:
    return isinstance(event, DPSGDEvent) and event.input == "noised"


def covered_events(events: list[MechanismEvent], releases: list[Release]) -> list[MechanismEvent]:
    """The events whose `artefact_composition` is the joint claim of `releases`.

    All of them when every release read x~ only through DP-SGD steps (both views
    cover the set). Once one release read x~ directly, only the forward-noise view
    covers the set: the DP-SGD steps on x~ are dropped, as they are post-processing
    of x~ and their own view no longer bounds it (module docstring)."""
    if all(r.through_dpsgd_only for r in releases):
        return list(events)
    return [e for e in events if not _dpsgd_on_noised(e)]


class PrivacyLedger:
    """The mechanisms one client has run, per artefact, against one budget.

    `budget_epsilon` bounds each artefact separately at `delta`; `accountant`
    is the one `charge` enforces the budget with. A list of frozen events is
    the whole state: anyone can recompute every epsilon from `to_json()`.
    """

    def __init__(
        self,
        *,
        client_id: str,
        budget_epsilon: float,
        delta: float,
        accountant: str = "pld",
        events: tuple[MechanismEvent, ...] | list[MechanismEvent] = (),
        releases: tuple[Release, ...] | list[Release] = (),
    ) -> None:
        if not isinstance(client_id, str) or not client_id:
            raise ConfigError("client_id must be a non-empty string")
        self.client_id = client_id
        self.budget_epsilon = _positive("budget_epsilon", budget_epsilon)
        if not 0.0 < float(delta) < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {delta}")
        self.delta = float(delta)
        self.accountant = check_accountant(accountant)
        self._events: list[MechanismEvent] = []
        # The largest epsilon each artefact reached at any charge: with DP-SGD on
        # noised data a later charge can LOWER the claim (artefact_epsilon), so a
        # plan's budget must cover every state on the way, not only the last.
        self._peak: dict[str, float] = {}
        for event in events:
            self._check_new(event)
            self._events.append(event)
        self._releases: list[Release] = []
        for release in releases:
            if not isinstance(release, Release):
                raise PrivacyError(f"not a release: {release!r}")
            if release not in self._releases:
                self._releases.append(release)

    @property
    def releases(self) -> tuple[Release, ...]:
        return tuple(self._releases)

    def _claim_events(self, artefact: str, *, events: list[MechanismEvent] | None = None,
                      releases: list[Release] | None = None) -> list[MechanismEvent]:
        """The artefact's events that its joint claim composes (`covered_events`)."""
        events = self._events if events is None else events
        releases = self._releases if releases is None else releases
        return covered_events([e for e in events if e.artefact == artefact],
                              [r for r in releases if r.artefact == artefact])

    def _claim(self, events: list[MechanismEvent], accountant: str | None = None) -> float:
        if not events:
            return math.inf
        return artefact_epsilon(events, delta=self.delta,
                                accountant=check_accountant(accountant or self.accountant))

    def record_release(self, release: Release) -> float:
        """Record that `release` is about to leave this client, after the mechanisms it
        is made of were charged; returns the artefact's joint claim. Recording the
        same release again changes nothing. PrivacyError for a DP-SGD-only release
        with no DP-SGD steps on x~ charged (its claim would fall once they are);
        BudgetExceededError (ledger unchanged) past the budget."""
        if not isinstance(release, Release):
            raise PrivacyError(f"not a release: {release!r}")
        if release in self._releases:
            return self.epsilon(release.artefact)
        if any(r.run_id == release.run_id and r.artefact == release.artefact
               for r in self._releases):
            raise PrivacyError(f"run {release.run_id!r} already released the {release.artefact} "
                               "artefact reading x~ another way")
        events = [e for e in self._events if e.artefact == release.artefact]
        if release.through_dpsgd_only and not any(_dpsgd_on_noised(e) for e in events):
            raise PrivacyError(f"{release.artefact} release of run {release.run_id!r}: no DP-SGD "
                               "steps on x~ are charged yet; charge them before releasing")
        candidate = [*self._releases, release]
        eps = self._claim(self._claim_events(release.artefact, releases=candidate))
        if not eps <= self.budget_epsilon:
            raise BudgetExceededError(
                f"client {self.client_id!r}: releasing the {release.artefact} artefact of run "
                f"{release.run_id!r} would bring it to epsilon {eps:.4g} > budget "
                f"{self.budget_epsilon:.4g} (delta={self.delta:g}, {self.accountant})")
        self._releases = candidate
        self._peak[release.artefact] = max(self._peak.get(release.artefact, 0.0), eps)
        return eps

    @property
    def events(self) -> tuple[MechanismEvent, ...]:
        return tuple(self._events)

    def noised_data_ids(self) -> frozenset[str]:
        return frozenset(e.data_id for e in self._events if isinstance(e, ForwardNoiseEvent))

    def _check_new(self, event: MechanismEvent) -> None:
        if not isinstance(event, tuple(EVENT_TYPES.values())):
            raise PrivacyError(f"not a mechanism event: {event!r}")
        if isinstance(event, ForwardNoiseEvent) and event.data_id in self.noised_data_ids():
            raise PrivacyError(
                f"data {event.data_id!r} of client {self.client_id!r} was already forward-noised; "
                "noising it again would compose and break the bound (reuse the persisted x~)"
            )

    def _with(self, event: MechanismEvent) -> list[MechanismEvent]:
        """The event list after adding `event`: a DP-SGD event merges into the
        artefact's latest event when that is DP-SGD with the same sigma and q, a
        distributed Skellam event when the latest is the same mechanism."""
        events = list(self._events)
        if isinstance(event, DistributedSkellamEvent | ClientLevelEvent):
            latest = next((i for i in range(len(events) - 1, -1, -1)
                           if events[i].artefact == event.artefact), None)
            if latest is not None and event.same_mechanism(events[latest]):
                events[latest] = replace(events[latest], steps=events[latest].steps + event.steps)
                return events
        if isinstance(event, DPSGDEvent):
            for i in range(len(events) - 1, -1, -1):
                last = events[i]
                if last.artefact != event.artefact:
                    continue
                if (
                    isinstance(last, DPSGDEvent)
                    and last.noise_multiplier == event.noise_multiplier
                    and last.sample_rate == event.sample_rate
                    and last.count_noise == event.count_noise
                    and last.input == event.input
                ):
                    events[i] = replace(last, steps=last.steps + event.steps)
                    return events
                break
        events.append(event)
        return events

    def charge(self, event: MechanismEvent) -> float:
        """Record `event` before its mechanism runs; returns the artefact's new
        epsilon. Raises BudgetExceededError (ledger unchanged) past the budget."""
        self._check_new(event)
        candidate = self._with(event)
        eps = self._claim(self._claim_events(event.artefact, events=candidate))
        if not eps <= self.budget_epsilon:
            raise BudgetExceededError(
                f"client {self.client_id!r}: {event.kind} would bring the {event.artefact} "
                f"artefact to epsilon {eps:.4g} > budget {self.budget_epsilon:.4g} "
                f"(delta={self.delta:g}, {self.accountant})"
            )
        self._events = candidate
        self._peak[event.artefact] = max(self._peak.get(event.artefact, 0.0), eps)
        return eps

    def peak_epsilon(self, artefact: str) -> float:
        """The largest epsilon `artefact` reached over this object's charges, or its
        current epsilon if larger (events given to the constructor were not charged)."""
        return max(self._peak.get(artefact, 0.0), self.epsilon(artefact))

    def epsilon(self, artefact: str, *, accountant: str | None = None) -> float:
        """Epsilon at the ledger's delta for `artefact`: the joint claim of all its
        releases (module docstring). An artefact without events has no guarantee
        from this ledger: math.inf, not 0."""
        _artefact(artefact)
        return self._claim(self._claim_events(artefact), accountant)

    def summary(self) -> dict[str, Any]:
        """Per artefact with events: epsilon by each accountant (None where an
        accountant cannot analyse the events) and the claim, the tightest of them."""
        artefacts: dict[str, Any] = {}
        for artefact in ARTEFACTS:
            events = [e for e in self._events if e.artefact == artefact]
            if not events:
                continue
            by_accountant: dict[str, float | None] = {}
            found: dict[str, Composition] = {}
            for name in ACCOUNTANTS:
                try:
                    found[name] = artefact_composition(self._claim_events(artefact),
                                                       delta=self.delta, accountant=name)
                    by_accountant[name] = found[name].epsilon
                except AccountantUnsupportedError:
                    by_accountant[name] = None
            best = min((v, k) for k, v in by_accountant.items() if v is not None)
            # method: "direct", or "group-privacy" where add/remove events reached a
            # replace-one claim only by that conversion (accountants.compose)
            artefacts[artefact] = {
                "events": len(events),
                "epsilon": by_accountant,
                "claimed": {"epsilon": best[0], "accountant": best[1],
                            "relation": found[best[1]].relation, "method": found[best[1]].method},
            }
            if any(is_client_level(e) for e in events):  # the unit is one client's update
                artefacts[artefact]["client_level"] = client_level_claim(
                    events, delta=self.delta)
        return {
            "client_id": self.client_id,
            "budget_epsilon": self.budget_epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "artefacts": artefacts,
        }

    # -- persistence -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LEDGER_FORMAT,
            "client_id": self.client_id,
            "budget_epsilon": self.budget_epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "events": [e.to_dict() for e in self._events],
            # Always written (empty too): a node ledger without the key predates release
            # records, and which runs read x~ directly cannot be read from its events.
            "releases": [r.to_dict() for r in self._releases],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyLedger:
        if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT:
            raise CheckpointError(f"not a format-{LEDGER_FORMAT} privacy ledger")
        try:
            events = [event_from_dict(e) for e in data["events"]]
            releases = [Release(**r) for r in data.get("releases", [])]
            return cls(
                client_id=data["client_id"],
                budget_epsilon=data["budget_epsilon"],
                delta=data["delta"],
                accountant=data["accountant"],
                events=events,
                releases=releases,
            )
        except (KeyError, TypeError, ValueError, PrivacyError) as exc:
            raise CheckpointError(f"invalid privacy ledger: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> PrivacyLedger:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"privacy ledger is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(client_id={self.client_id!r}, events={len(self._events)}, "
            f"budget_epsilon={self.budget_epsilon}, delta={self.delta}, "
            f"accountant={self.accountant!r})"
        )
