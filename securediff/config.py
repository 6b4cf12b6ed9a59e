"""One frozen, validated run configuration.

A config is read from TOML (sections below) and/or flags of the form
`--section.key value`; unknown sections or keys and out-of-range values raise
`ConfigError` naming the field and what is allowed. Validation happens before
anything touches the disk, so a bad config never leaves a run directory.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from securediff.errors import ConfigError
from securediff.strategy_rules import STRATEGY_RULES, StrategyRules, either, names_where

DATASETS = ("digits", "colored-digits", "mnist-idx", "fashion-mnist-idx", "medmnist-npz")
STRATEGIES = tuple(STRATEGY_RULES)
# Public data: the built-in font digits, or any dataset loader (the data must be truly public).
PUBLIC_DATASETS = ("font-digits", *DATASETS)
PARTITIONS = ("iid", "dirichlet", "shards", "quantity")
ACCOUNTANTS = ("pld", "rdp", "prv")


# Set while `stated_rules` reads the rules: `_check` records each instead of judging.
_RULES: ContextVar[dict[str, str] | None] = ContextVar("config_rules", default=None)


def _check(cond: bool, name: str, allowed: str, value: Any) -> None:
    rules = _RULES.get()
    if rules is not None:
        rules.setdefault(name, allowed)
    elif not cond:
        raise ConfigError(f"{name} = {value!r} is not allowed: {allowed}")


def stated_rules() -> dict[str, str]:
    """The rule each section's `validate` states per key (the first, where several),
    as the help and the annotated config show it."""
    rules: dict[str, str] = {}
    token = _RULES.set(rules)
    try:
        for cls in section_types().values():
            cls().validate()
    finally:
        _RULES.reset(token)
    return rules


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    out_dir: str = "runs"
    device: str = "auto"  # auto | cpu | cuda
    # Insecure deterministic test mode: every random stream is derived from this
    # recorded seed and every artefact says "not private". None = private.
    insecure_seed: int | None = None
    # Clients trained at once, each on one intra-op thread (0 = one per CPU core,
    # at most the number of clients). On this 2-core machine two clients side by
    # side beat one client on two threads, which collapses when anything else
    # runs (docs/performance.md).
    workers: int = 0

    def validate(self) -> None:
        _check(self.workers >= 0, "run.workers", "an integer >= 0 (0 = one per CPU core)", self.workers)
        _check(bool(self.name) and "/" not in self.name and not self.name.startswith(".")
               and self.name.isprintable(), "run.name",
               "a non-empty printable name without '/' that does not start with '.'", self.name)
        _check(self.device in ("auto", "cpu", "cuda"), "run.device", "auto, cpu or cuda", self.device)
        _check(self.insecure_seed is None or self.insecure_seed >= 0, "run.insecure_seed",
               "a non-negative integer", self.insecure_seed)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    path: str = ""  # local file or directory for mnist-idx / medmnist-npz
    num_clients: int = 10
    partition: str = "dirichlet"
    alpha: float = 1.0
    shards_per_client: int = 2
    quantity_sigma: float = 1.0
    partition_seed: int = 0
    holdout_fraction: float = 0.2
    test_fraction: float = 0.25

    def validate(self) -> None:
        _check(self.dataset in DATASETS, "data.dataset", f"one of {', '.join(DATASETS)}", self.dataset)
        if self.dataset in ("mnist-idx", "fashion-mnist-idx", "medmnist-npz"):
            _check(bool(self.path), "data.path", f"a local path (required for {self.dataset})", self.path)
            _check(Path(self.path).exists(), "data.path", "an existing file or directory", self.path)
        _check(1 <= self.num_clients <= 1000, "data.num_clients", "an integer in [1, 1000]", self.num_clients)
        _check(self.partition in PARTITIONS, "data.partition", f"one of {', '.join(PARTITIONS)}", self.partition)
        _check(self.alpha > 0 and math.isfinite(self.alpha), "data.alpha", "a positive number", self.alpha)
        _check(self.shards_per_client >= 1, "data.shards_per_client", "an integer >= 1", self.shards_per_client)
        _check(self.quantity_sigma > 0, "data.quantity_sigma", "a positive number", self.quantity_sigma)
        _check(self.partition_seed >= 0, "data.partition_seed", "a non-negative integer", self.partition_seed)
        _check(0 < self.holdout_fraction < 1, "data.holdout_fraction", "a number in (0, 1)", self.holdout_fraction)
        _check(0 < self.test_fraction < 1, "data.test_fraction", "a number in (0, 1)", self.test_fraction)


@dataclass(frozen=True)
class DiffusionConfig:
    T: int = 1000
    schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sampler: str = "ddim"
    sample_steps: int = 50
    guidance: float = 0.0
    label_dropout: float = 0.1  # classifier-free guidance training

    def validate(self) -> None:
        _check(2 <= self.T <= 10000, "diffusion.T", "an integer in [2, 10000]", self.T)
        _check(self.schedule in ("linear", "cosine"), "diffusion.schedule", "linear or cosine", self.schedule)
        _check(0 < self.beta_start < self.beta_end < 1, "diffusion.beta_start/beta_end",
               "0 < beta_start < beta_end < 1", (self.beta_start, self.beta_end))
        _check(self.sampler in ("ddim", "ancestral"), "diffusion.sampler", "ddim or ancestral", self.sampler)
        _check(1 <= self.sample_steps <= self.T, "diffusion.sample_steps", "an integer in [1, T]", self.sample_steps)
        _check(self.guidance >= 0, "diffusion.guidance", "a number >= 0", self.guidance)
        _check(0 <= self.label_dropout < 1, "diffusion.label_dropout", "a number in [0, 1)", self.label_dropout)


@dataclass(frozen=True)
class ModelConfig:
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    attention: bool = False
    groups: int = 8

    def validate(self) -> None:
        _check(self.base_channels >= 4 and self.base_channels % self.groups == 0, "model.base_channels",
               "an integer >= 4 divisible by model.groups", self.base_channels)
        _check(1 <= len(self.channel_mults) <= 4 and all(m >= 1 for m in self.channel_mults),
               "model.channel_mults", "1 to 4 positive integers", self.channel_mults)
        _check(self.groups >= 1, "model.groups", "an integer >= 1", self.groups)


@dataclass(frozen=True)
class PrivacyConfig:
    target_epsilon: float = 10.0  # forward-noise budget per record (replace-one)
    delta: float = 1e-5
    clip_norm: float = 10.0  # PFDM's C: images are clipped to this L2 norm before noising
    t0: int | None = None  # None: the smallest t0 that meets target_epsilon
    accounting: str = "exact"  # exact (Balle & Wang) | classic (the paper's bound)
    accountant: str = "pld"  # for DP-SGD events and the ledger's headline
    labels: str = "public"  # public | randomized-response
    label_epsilon: float = 1.0
    dpsgd_shared: bool = False
    dpsgd_personal: bool = False
    dpsgd_epsilon: float = 10.0  # per artefact trained with DP-SGD
    max_grad_norm: float = 1.0
    noise_multiplicity: int = 1  # K noise/timestep draws per sample, averaged before clipping
    secure_noise: bool = False  # Opacus' secure_mode: DP-SGD noise as the halved sum of 4 draws
    # "adaptive" (docs/adaptive_clipping.md): PFDM's clip_norm becomes a private quantile
    # of the clients' image norms (and t0 is calibrated for what remains of
    # target_epsilon); shared updates and DP-SGD's per-sample gradients are clipped at
    # norms that move toward the clip_quantile of their norms (Andrew et al. 2021).
    # clip_norm, max_grad_norm and federation.update_clip are then only starting points.
    clipping: str = "fixed"  # fixed | adaptive
    clip_quantile: float = 0.5  # target quantile of the norms (Andrew et al.'s default)
    clip_lr: float = 0.2  # geometric learning rate of the clip norm (Andrew et al.'s default)
    clip_quantile_epsilon: float | None = None  # PFDM's private quantile; None: target_epsilon / 20
    # hybrid (distributed DP-SGD): each client adds noise for this many contributors;
    # a step with fewer is never unmasked. 0 = 80% of the clients, rounded up.
    ddp_min_survivors: int = 0
    # Client-level DP (securediff/privacy/client_level.py): each client's whole shared
    # update clipped to client_clip, the sum noised (gaussian: by the aggregator;
    # skellam: shares added by the clients, through secagg), calibrated so that all
    # rounds meet client_epsilon for the add/remove of one client's update.
    client_level: bool = False
    client_noise: str = "gaussian"  # gaussian | skellam
    client_clip: float = 1.0
    client_epsilon: float = 8.0
    client_noise_multiplier: float = 0.0  # > 0: this noise instead of calibrating to client_epsilon

    def validate(self) -> None:
        _check(self.target_epsilon > 0 and math.isfinite(self.target_epsilon), "privacy.target_epsilon",
               "a positive finite number", self.target_epsilon)
        _check(0 < self.delta < 1, "privacy.delta", "a number in (0, 1)", self.delta)
        _check(self.clip_norm > 0, "privacy.clip_norm", "a positive number", self.clip_norm)
        _check(self.t0 is None or self.t0 >= 1, "privacy.t0", "an integer >= 1 (and < T)", self.t0)
        _check(self.accounting in ("exact", "classic"), "privacy.accounting", "exact or classic", self.accounting)
        _check(self.accountant in ACCOUNTANTS, "privacy.accountant", f"one of {', '.join(ACCOUNTANTS)}", self.accountant)
        _check(self.labels in ("public", "randomized-response"), "privacy.labels",
               "public or randomized-response", self.labels)
        _check(self.label_epsilon > 0, "privacy.label_epsilon", "a positive number", self.label_epsilon)
        _check(self.dpsgd_epsilon > 0, "privacy.dpsgd_epsilon", "a positive number", self.dpsgd_epsilon)
        _check(self.max_grad_norm > 0, "privacy.max_grad_norm", "a positive number", self.max_grad_norm)
        _check(1 <= self.noise_multiplicity <= 64, "privacy.noise_multiplicity", "an integer in [1, 64]",
               self.noise_multiplicity)
        _check(self.clipping in ("fixed", "adaptive"), "privacy.clipping", "fixed or adaptive", self.clipping)
        _check(self.ddp_min_survivors >= 0, "privacy.ddp_min_survivors", "an integer >= 0 (0 = 80% of clients)",
               self.ddp_min_survivors)
        _check(0 < self.clip_quantile < 1, "privacy.clip_quantile", "a number in (0, 1)", self.clip_quantile)
        _check(0 < self.clip_lr <= 10, "privacy.clip_lr", "a number in (0, 10]", self.clip_lr)
        _check(self.clip_quantile_epsilon is None or 0 < self.clip_quantile_epsilon < self.target_epsilon,
               "privacy.clip_quantile_epsilon", "a number in (0, privacy.target_epsilon), or none",
               self.clip_quantile_epsilon)
        _check(self.client_noise in ("gaussian", "skellam"), "privacy.client_noise", "gaussian or skellam",
               self.client_noise)
        _check(self.client_clip > 0 and math.isfinite(self.client_clip), "privacy.client_clip",
               "a positive finite number", self.client_clip)
        _check(self.client_epsilon > 0 and math.isfinite(self.client_epsilon), "privacy.client_epsilon",
               "a positive finite number", self.client_epsilon)
        _check(self.client_noise_multiplier >= 0 and math.isfinite(self.client_noise_multiplier),
               "privacy.client_noise_multiplier", "a number >= 0 (0 = calibrate to privacy.client_epsilon)",
               self.client_noise_multiplier)
        _check(self.clipping == "fixed" or self.accounting == "exact", "privacy.clipping",
               "adaptive only with privacy.accounting = exact (t0 is calibrated for the composed "
               "mechanisms, which the classic bound does not cover)", self.clipping)


@dataclass(frozen=True)
class FederationConfig:
    strategy: str = "pfdm"
    protocol: str = "plain"
    # Simulated dropouts: this fraction of each round's selected clients
    # disappears before `dropout_stage` (a stage name of the protocol; "" = a
    # random client stage per dropped client).
    dropout_rate: float = 0.0
    dropout_stage: str = ""
    rounds: int = 10
    client_fraction: float = 1.0
    local_steps: int = 30  # shared-model steps per client per round (hybrid: distributed DP-SGD steps)
    update_clip: float = 0.0  # L2 clip of each client's shared update; 0 = off
    # hybrid: the personal denoiser handles t in [1, personal_t], fine-tuned from the shared one
    personal_t: int = 300
    # hybrid: also release PFDM's once-noised x~ at privacy.t0; each distributed
    # DP-SGD step then adds, unnoised, the gradients on x~ for t > t0 and takes
    # the raw records' (noised) gradients for t <= t0 only
    hybrid_forward: bool = False

    def validate(self) -> None:
        _check(self.strategy in STRATEGIES, "federation.strategy", f"one of {', '.join(STRATEGIES)}", self.strategy)
        from protocols.registry import protocol_names

        _check(self.protocol in protocol_names(), "federation.protocol",
               f"one of {', '.join(protocol_names())}", self.protocol)
        _check(0 <= self.dropout_rate < 1, "federation.dropout_rate", "a number in [0, 1)", self.dropout_rate)
        _check(1 <= self.rounds <= 100000, "federation.rounds", "an integer >= 1", self.rounds)
        _check(0 < self.client_fraction <= 1, "federation.client_fraction", "a number in (0, 1]", self.client_fraction)
        _check(self.local_steps >= 1, "federation.local_steps", "an integer >= 1", self.local_steps)
        _check(self.update_clip >= 0, "federation.update_clip", "a number >= 0 (0 = off)", self.update_clip)
        _check(self.personal_t >= 1, "federation.personal_t", "an integer >= 1 (and < T)", self.personal_t)

    @property
    def strategy_rules(self) -> StrategyRules:
        """What the strategy plans, requires and claims (securediff/strategy_rules.py)."""
        return STRATEGY_RULES[self.strategy]


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = 64
    lr: float = 2e-3
    personal_steps: int = 300  # per client, spread over the rounds
    centralized_steps: int = 1500

    def validate(self) -> None:
        _check(1 <= self.batch_size <= 65536, "training.batch_size", "an integer in [1, 65536]", self.batch_size)
        _check(0 < self.lr < 1, "training.lr", "a number in (0, 1)", self.lr)
        _check(self.personal_steps >= 0, "training.personal_steps", "an integer >= 0", self.personal_steps)
        _check(self.centralized_steps >= 1, "training.centralized_steps", "an integer >= 1", self.centralized_steps)


@dataclass(frozen=True)
class EvalConfig:
    samples_per_class: int = 50
    evaluator_epochs: int = 8

    def validate(self) -> None:
        _check(1 <= self.samples_per_class <= 10000, "eval.samples_per_class", "an integer in [1, 10000]",
               self.samples_per_class)
        _check(1 <= self.evaluator_epochs <= 1000, "eval.evaluator_epochs", "an integer in [1, 1000]",
               self.evaluator_epochs)


@dataclass(frozen=True)
class PublicConfig:
    # Public data pretrains the shared model and seeds every personal one before any
    # private step; it holds no one's records, so it has no ledger event. "" = none.
    dataset: str = ""
    path: str = ""  # local file or directory, for the file-based loaders
    per_class: int = 300  # font-digits: images rendered per digit
    steps: int = 1000  # pretraining steps (all timesteps; training.batch_size, training.lr)

    def validate(self) -> None:
        _check(self.dataset == "" or self.dataset in PUBLIC_DATASETS, "public.dataset",
               f"empty (no public data) or one of {', '.join(PUBLIC_DATASETS)}", self.dataset)
        if self.dataset in ("mnist-idx", "fashion-mnist-idx", "medmnist-npz"):
            _check(bool(self.path) and Path(self.path).exists(), "public.path",
                   f"an existing local path (required for {self.dataset})", self.path)
        _check(1 <= self.per_class <= 100000, "public.per_class", "an integer in [1, 100000]", self.per_class)
        _check(1 <= self.steps <= 1000000, "public.steps", "an integer in [1, 1000000]", self.steps)


# The feature maps a statistics release may declare (securediff/privacy/stats_release.py).
STATS_FEATURE_MAPS = ("identity", "colour-normalised-grey")
# Which denoiser a client of a release-based strategy samples below stats.handoff_t.
STATS_BELOW_HANDOFF = ("personal", "shared")


@dataclass(frozen=True)
class StatsConfig:
    # A DP release of per-class feature sums and their second moment, once, before
    # the first round (docs/stats_release.md, "In a run").
    release: bool = False
    feature_map: str = "identity"
    clip: float = 0.0  # L2 clip of each record's features; 0 = the median norm of the public data's
    moment_rank: int = 0  # 0 = the full second moment; r > 0 = of the top r public principal directions
    epsilon: float = 1.0  # the release's own target at privacy.delta
    # What the strategies that use the release do with it (dpstats, docs/stats_release.md):
    # the shared model (the public one fine-tuned on draws from the release) denoises
    # t in (handoff_t, T]; below it each client samples its personal denoiser (trained
    # on its raw records) or, with below_handoff = "shared", the public model.
    handoff_t: int = 500  # the middle of the default T = 1000 (not tuned on any data)
    below_handoff: str = "personal"  # personal | shared
    finetune_steps: int = 500  # fine-tuning steps of the shared model on draws, spread over the rounds

    def validate(self) -> None:
        _check(self.feature_map in STATS_FEATURE_MAPS, "stats.feature_map",
               f"one of {', '.join(STATS_FEATURE_MAPS)}", self.feature_map)
        _check(self.clip >= 0 and math.isfinite(self.clip), "stats.clip",
               "a number >= 0 (0 = the median feature norm of the public data)", self.clip)
        _check(self.moment_rank >= 0, "stats.moment_rank",
               "an integer >= 0 (0 = the full second moment)", self.moment_rank)
        _check(self.epsilon > 0 and math.isfinite(self.epsilon), "stats.epsilon",
               "a positive finite number", self.epsilon)
        _check(self.handoff_t >= 1, "stats.handoff_t", "an integer >= 1 (and < T)", self.handoff_t)
        _check(self.below_handoff in STATS_BELOW_HANDOFF, "stats.below_handoff",
               f"one of {', '.join(STATS_BELOW_HANDOFF)}", self.below_handoff)
        _check(1 <= self.finetune_steps <= 1000000, "stats.finetune_steps", "an integer in [1, 1000000]",
               self.finetune_steps)


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    public: PublicConfig = field(default_factory=PublicConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    # Keyword parameters of the aggregation protocol (TOML table [protocol],
    # flags --protocol.KEY VALUE); the protocol class validates them.
    protocol: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> Config:
        for name in section_types():
            getattr(self, name).validate()
        _check_protocol_params(self.federation.protocol, self.protocol)
        t0 = self.privacy.t0
        _check(t0 is None or t0 < self.diffusion.T, "privacy.t0", f"an integer in [1, T-1] (T = {self.diffusion.T})", t0)
        rules = self.federation.strategy_rules
        _check(not self.federation.hybrid_forward or rules.forward_option, "federation.hybrid_forward",
               f"false unless federation.strategy = {either(names_where(lambda r: r.forward_option))}",
               self.federation.hybrid_forward)
        if self.privacy.client_level:
            self._validate_client_level(rules)
        for requirement in rules.requirements(self):
            _check(*requirement)
        if self.stats.release:
            self._validate_stats_release(rules)
        return self

    def _validate_stats_release(self, rules: StrategyRules) -> None:
        f, p, s = self.federation, self.privacy, self.stats
        _check(rules.joins_stats_release, "stats.release",
               f"true only for strategy {either(names_where(lambda r: r.joins_stats_release))}: "
               "the release is a protocol round among the clients", s.release)
        _check(f.protocol in ("secagg", "plain", "tee"), "federation.protocol",
               "secagg (Skellam shares), plain or tee (the aggregator's Gaussian) with stats.release",
               f.protocol)
        if f.protocol == "secagg":
            _check(p.accountant == "rdp", "privacy.accountant",
                   "rdp with stats.release on secagg (the only accountant of Skellam shares)", p.accountant)
        _check(p.labels == "public", "privacy.labels",
               "public with stats.release (the release's per-class counts are its labels' counts)", p.labels)
        _check(s.clip > 0 or bool(self.public.dataset), "stats.clip",
               "a positive number unless public.dataset is set (0 takes the public data's median "
               "feature norm)", s.clip)
        _check(s.moment_rank == 0 or bool(self.public.dataset), "stats.moment_rank",
               "0 unless public.dataset is set (the principal directions are fitted on public data only)",
               s.moment_rank)

    def _validate_client_level(self, rules: StrategyRules) -> None:
        f, p = self.federation, self.privacy
        _check(rules.sends_updates, "privacy.client_level",
               f"true only for strategy {either(names_where(lambda r: r.sends_updates))} (clients must send "
               f"shared updates; {either(names_where(lambda r: r.distributed))} is already distributed DP)",
               p.client_level)
        _check(f.update_clip == 0, "federation.update_clip", "0 with privacy.client_level (privacy.client_clip "
               "clips the updates)", f.update_clip)
        _check(p.clipping == "fixed", "privacy.clipping", "fixed with privacy.client_level", p.clipping)
        if p.client_noise == "skellam":
            _check(f.protocol == "secagg", "federation.protocol",
                   "secagg for privacy.client_noise = skellam (the shares must be summed blindly)", f.protocol)
            _check(p.accountant == "rdp", "privacy.accountant",
                   "rdp for privacy.client_noise = skellam (its only accountant)", p.accountant)
            _check(f.client_fraction == 1.0, "federation.client_fraction",
                   "1.0 for privacy.client_noise = skellam (the noise floor counts every client)",
                   f.client_fraction)
            for key in ("value_bits", "min_contributors"):
                _check(key not in self.protocol, f"protocol.{key}",
                       "left unset for privacy.client_noise = skellam (the plan sets it)", self.protocol.get(key))

    @property
    def private(self) -> bool:
        """False in the insecure deterministic test mode."""
        return self.run.insecure_seed is None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in section_types():
            values = dataclasses.asdict(getattr(self, name))
            # TOML has no null: an unset optional key is simply left out.
            out[name] = {k: list(v) if isinstance(v, tuple) else v
                         for k, v in values.items() if v is not None}
        if self.protocol:
            out["protocol"] = dict(self.protocol)
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def replace(self, **sections: dict[str, Any]) -> Config:
        return from_dict(_merge(self.to_dict(), sections), base=Config())


def section_types() -> dict[str, type]:
    """The dataclass sections (the free-form [protocol] table is not one)."""
    return {f.name: f.default_factory for f in dataclasses.fields(Config)  # type: ignore[misc]
            if f.name != "protocol"}


def _check_protocol_params(name: str, params: dict[str, Any]) -> None:
    """Build the protocol once so that bad parameters fail before the run starts."""
    from protocols.errors import ProtocolInputError
    from protocols.registry import make_protocol

    try:
        make_protocol(name, **params)
    except ProtocolInputError as exc:
        raise ConfigError(f"[protocol] parameters for {name!r}: {exc}") from None


def _protocol_value(name: str, value: Any) -> Any:
    """Flags arrive as strings: read numbers and booleans; TOML values pass as they are."""
    if not isinstance(value, str):
        return value
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _merge(base: dict[str, dict[str, Any]], override: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged = {k: dict(v) for k, v in base.items()}
    for section, values in override.items():
        merged.setdefault(section, {}).update(values)
    return merged


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check a TOML/flag value against the field's type; flags arrive as strings."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):  # X | None
        if value is None or (isinstance(value, str) and value.lower() in ("none", "auto", "")):
            return None
        return _coerce(name, value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list of integers, got {value!r}")
        return tuple(_coerce(name, v, args[0]) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value), 10)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported type")  # pragma: no cover


def from_dict(raw: dict[str, Any], *, base: Config | None = None) -> Config:
    """Build a validated Config; `raw` maps section -> {key: value}."""
    base = base or Config()
    sections = section_types()
    updated: dict[str, Any] = {}
    for section_name, values in raw.items():
        if section_name == "protocol":
            if not isinstance(values, dict):
                raise ConfigError("[protocol] must be a table of keys")
            updated["protocol"] = {**base.protocol, **{k: _protocol_value(f"protocol.{k}", v)
                                                       for k, v in values.items()}}
            continue
        if section_name not in sections:
            raise ConfigError(f"unknown config section [{section_name}]; known: {', '.join(sections)}, protocol")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section_name}] must be a table of keys")
        cls = sections[section_name]
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown config key {section_name}.{key}; known: {', '.join(sorted(known))}")
            kwargs[key] = _coerce(f"{section_name}.{key}", value, hints[key])
        updated[section_name] = dataclasses.replace(getattr(base, section_name), **kwargs)
    return dataclasses.replace(base, **updated).validate()


def load_toml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (TOML must be)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def parse_flag_overrides(args: list[str]) -> dict[str, dict[str, Any]]:
    """`--section.key value` or `--section.key=value` pairs (every config key is a flag)."""
    out: dict[str, dict[str, Any]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            raise ConfigError(f"unexpected argument {arg!r}; config flags look like --section.key VALUE")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"flag --{key} needs a value")
            value = args[i + 1]
            i += 1
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name.replace("-", "_")] = value
        i += 1
    return out


def flag_help() -> str:
    lines = []
    for section_name, cls in section_types().items():
        defaults = cls()
        for f in dataclasses.fields(cls):
            lines.append(f"--{section_name}.{f.name} (default {getattr(defaults, f.name)!r})")
    return "\n".join(lines)
