"""What each strategy is, declared once, without torch.

The trainers in securediff/federation/strategies.py say how a strategy trains;
the rules here say what it plans, releases and claims: whether it is federated,
which DP-SGD it plans, what its shared path trains on, under which neighbouring
relation its shared claim holds, what it requires of a config and how the
privacy statement words its shared model. Config validation, accounting, export,
the statement and the Flower plan ask these objects, so the registry below is
the only place a strategy's name decides anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from securediff.config import Config


class Requirement(NamedTuple):
    """A condition a strategy puts on the config; refused as
    "`field` = `value` is not allowed: `allowed`"."""

    holds: bool
    field: str
    allowed: str
    value: Any


@dataclass(frozen=True)
class SharedClaim:
    """What the statement knows when it words the shared denoiser's guarantee."""

    epsilon: float
    accountant: str
    delta: float
    label_note: str
    protocol_name: str
    hybrid_forward: bool
    adaptive_quantile: float | None
    client_level: bool
    # How a strategy built on the [stats] release uses it (None elsewhere): the release's
    # epsilon, stats.handoff_t, stats.below_handoff and whether the feature map drops a
    # style that each client restores from its own records.
    release_epsilon: float | None = None
    handoff_t: int | None = None
    below_handoff: str | None = None
    style_restored: bool = False


def eps_text(value: float) -> str:
    return "none" if not math.isfinite(value) else f"epsilon = {value:.3f}"


class StrategyRules:
    name: str
    federated = True  # the clients train the shared model every round
    distributed = False  # the shared model is trained by distributed DP-SGD (noise shares summed blindly)
    shares_model = True  # the global model is trained only on what may leave: export may copy it
    personal_layers: tuple[str, ...] = ()  # parameter prefixes of the global copy that were never shared
    on_flower = False  # a node's shared update needs nothing from other clients
    needs_public = False  # nothing without the public model ([public] dataset)
    forward_noise = False  # the shared path trains only on data noised once at t0, which t0 pays for
    forward_option = False  # federation.hybrid_forward may add forward noise
    plans_dpsgd_shared = False  # with privacy.dpsgd_shared
    plans_dpsgd_personal = False  # with privacy.dpsgd_personal
    personal_runs_local_steps = False  # the personal model also trains the round's federation.local_steps
    samples_personal_only = False  # a client samples its personal denoiser alone
    client_model_artefact = "personal"  # the ledger artefact that pays for a client's own model
    no_collaboration_baseline = False  # what experiments compare every method of a setting against
    collaborative = True  # a client's model learns from other clients' data (experiments' gains need a False row)
    release_based = False  # what a client samples is built on the [stats] release (post-processing of it)
    headline_artefact = "shared denoiser"  # what the statement's headline epsilon is the claim of

    @property
    def joins_stats_release(self) -> bool:
        """Its clients can take part in a [stats] release (a protocol round among them)."""
        return self.federated or self.release_based

    @property
    def sends_updates(self) -> bool:
        """Each client sends its shared update for the aggregator to average: what
        client-level DP and adaptive update clipping act on."""
        return self.federated and not self.distributed

    def noises_data(self, *, hybrid_forward: bool) -> bool:
        """Whether each client's shared path trains on its data noised once to t0."""
        return self.forward_noise or hybrid_forward

    def shared_relation(self, *, hybrid_forward: bool) -> str:
        """The neighbouring relation of the shared claim (forward noise: replace-one)."""
        return "replace-one" if self.noises_data(hybrid_forward=hybrid_forward) else "add/remove"

    def dpsgd_input(self, artefact: str) -> str:
        """What a planned DP-SGD event of `artefact` trains on (DPSGDEvent.input)."""
        return "noised" if artefact == "shared" and self.forward_noise else "raw"

    def requirements(self, config: Config) -> Iterator[Requirement]:
        """What this strategy asks of an otherwise valid config, in the order checked."""
        if self.needs_public:
            yield Requirement(bool(config.public.dataset), "public.dataset",
                              f"set for strategy {self.name} (it starts from the public model)",
                              config.public.dataset)
            yield Requirement(not config.privacy.dpsgd_personal, "privacy.dpsgd_personal",
                              f"false for strategy {self.name} (not planned)", config.privacy.dpsgd_personal)

    # -- the privacy statement's wording -----------------------------------------------
    def shared_guarantee(self, claim: SharedClaim) -> str:
        text = self._shared_text(claim)
        if claim.adaptive_quantile is not None and self.sends_updates:
            text += ("; updates clipped at a norm that tracks their "
                     f"{claim.adaptive_quantile:g}-quantile from bits aggregated with them "
                     "(post-processing of the updates: no further cost)")
        return text

    def _shared_text(self, claim: SharedClaim) -> str:
        raise NotImplementedError

    def personal_guarantee(self, default: str, claim: SharedClaim | None = None) -> str:
        return default

    def samples_guarantee(self, default: str, claim: SharedClaim | None = None) -> str:
        return default


class PFDM(StrategyRules):
    name = "pfdm"
    on_flower = True
    forward_noise = True
    plans_dpsgd_shared = True
    plans_dpsgd_personal = True

    def requirements(self, config: Config) -> Iterator[Requirement]:
        yield from super().requirements(config)
        # The personal denoiser trains training.personal_steps steps and no more: with
        # none, DP-SGD would plan zero steps, which no accountant calibrates.
        yield Requirement(not config.privacy.dpsgd_personal or config.training.personal_steps >= 1,
                          "training.personal_steps",
                          "an integer >= 1 with privacy.dpsgd_personal = true (for no personal training, "
                          "set privacy.dpsgd_personal = false)", config.training.personal_steps)

    def _shared_text(self, c: SharedClaim) -> str:
        return (f"post-processing of x~ (max over clients {eps_text(c.epsilon)}, {c.accountant}, "
                f"delta = {c.delta:g}); {c.label_note}")


class LayerSplit(StrategyRules):
    name = "layer-split"
    personal_layers = ("label_emb.", "out_norm.", "out.")  # the label embedding and the output head
    plans_dpsgd_shared = True
    # A client's own model is trained (shared backbone included) only through its
    # shared-update steps, so the shared DP-SGD pays for it.
    client_model_artefact = "shared"

    def _shared_text(self, c: SharedClaim) -> str:
        return (f"DP-SGD on the shared layers: {eps_text(c.epsilon)} ({c.accountant}, delta = {c.delta:g})"
                if math.isfinite(c.epsilon) else "none: trained on raw data without DP-SGD")


class FedAvg(StrategyRules):
    name = "fedavg"
    on_flower = True

    def shared_guarantee(self, claim: SharedClaim) -> str:
        if claim.client_level:
            return (f"no record-level mechanism; a record moves only its client's clipped update, so the "
                    f"client-level DP below covers it: replace-one {eps_text(claim.epsilon)} "
                    f"({claim.accountant}, delta = {claim.delta:g})")
        return super().shared_guarantee(claim)

    def _shared_text(self, c: SharedClaim) -> str:
        return "none: the whole model is trained on raw data without DP"


class Local(StrategyRules):
    name = "local"
    federated = False
    collaborative = False
    shares_model = False
    plans_dpsgd_personal = True
    personal_runs_local_steps = True
    samples_personal_only = True
    no_collaboration_baseline = True

    def _shared_text(self, c: SharedClaim) -> str:
        return "not shared (no collaboration)"


class Centralized(StrategyRules):
    name = "centralized"
    federated = False
    shares_model = False  # pooled raw data

    def _shared_text(self, c: SharedClaim) -> str:
        return "none: pooled raw data (an upper bound, not a deployable option)"


class Hybrid(StrategyRules):
    name = "hybrid"
    distributed = True
    forward_option = True

    def requirements(self, config: Config) -> Iterator[Requirement]:
        yield from super().requirements(config)
        f, p = config.federation, config.privacy
        yield Requirement(f.protocol == "secagg", "federation.protocol",
                          "secagg for strategy hybrid (distributed DP needs the noise shares summed blindly)",
                          f.protocol)
        yield Requirement(f.client_fraction == 1.0, "federation.client_fraction",
                          "1.0 for strategy hybrid (every client takes part in every step)", f.client_fraction)
        yield Requirement(f.update_clip == 0, "federation.update_clip",
                          "0 for strategy hybrid (records are clipped)", f.update_clip)
        yield Requirement(p.clipping == "fixed", "privacy.clipping", "fixed for strategy hybrid", p.clipping)
        yield Requirement(p.accountant == "rdp", "privacy.accountant",
                          "rdp for strategy hybrid (the Skellam mechanism is analysed by its RDP bound)",
                          p.accountant)
        yield Requirement(not p.dpsgd_personal, "privacy.dpsgd_personal",
                          "false for strategy hybrid (its personal fine-tuning is not accounted yet)",
                          p.dpsgd_personal)
        yield Requirement(not p.dpsgd_shared, "privacy.dpsgd_shared",
                          "false for strategy hybrid (its shared model is already trained by distributed "
                          "DP-SGD)", p.dpsgd_shared)
        yield Requirement(f.personal_t < config.diffusion.T, "federation.personal_t",
                          f"an integer in [1, T-1] (T = {config.diffusion.T})", f.personal_t)
        yield Requirement(p.ddp_min_survivors <= config.data.num_clients, "privacy.ddp_min_survivors",
                          f"at most data.num_clients = {config.data.num_clients}", p.ddp_min_survivors)
        for key in ("value_bits", "min_contributors"):
            yield Requirement(key not in config.protocol, f"protocol.{key}",
                              "left unset for strategy hybrid (the distributed DP plan sets it)",
                              config.protocol.get(key))
        if f.hybrid_forward:
            yield Requirement(p.t0 is not None, "privacy.t0",
                              "set for federation.hybrid_forward (the forward noise's share of the budget is "
                              "fixed by t0; the distributed DP-SGD noise is calibrated for the rest)", p.t0)

    def _shared_text(self, c: SharedClaim) -> str:
        if c.hybrid_forward:
            return (f"distributed DP-SGD on the raw records for t <= t0 (Skellam noise shares summed by "
                    f"{c.protocol_name}) plus unnoised gradients on x~ for t > t0, composed with the forward "
                    f"noise of x~ (replace-one): {eps_text(c.epsilon)} ({c.accountant}, delta = {c.delta:g}); "
                    f"{c.label_note}")
        return (f"distributed DP-SGD, record level over all clients' records (add/remove): Skellam noise "
                f"shares summed by {c.protocol_name}, {eps_text(c.epsilon)} from the noise that reached "
                f"each released sum ({c.accountant}, delta = {c.delta:g}); {c.label_note}")


class PublicOnly(StrategyRules):
    name = "public-only"
    federated = False
    collaborative = False
    shares_model = False
    needs_public = True

    def _shared_text(self, c: SharedClaim) -> str:
        return "not shared: every client samples the public model (no private training)"

    def personal_guarantee(self, default: str, claim: SharedClaim | None = None) -> str:
        return "none trained: no record of the client is used"

    def samples_guarantee(self, default: str, claim: SharedClaim | None = None) -> str:
        return "drawn from the public model alone (in the client's colour): no private record is used"


class LocalPublic(Local):
    name = "local+public"
    needs_public = True
    plans_dpsgd_personal = False
    no_collaboration_baseline = False  # it starts from what the public model learnt

    def _shared_text(self, c: SharedClaim) -> str:
        return "not shared (no collaboration; the public model is every client's start)"


STYLE_CLAUSE = ("the style the feature map removed (each channel's mean brightness per class, e.g. the "
                "client's colour) is restored from the client's own member records: it carries NO "
                "guarantee for those records")


def _release_text(c: SharedClaim) -> str:
    eps = eps_text(c.release_epsilon if c.release_epsilon is not None else c.epsilon)
    return f"the feature statistics release's guarantee ({eps}, delta = {c.delta:g}; post-processing)"


class ReleaseBased(StrategyRules):
    """A strategy whose collaboration is the [stats] release alone: no training round,
    no update leaves a client; what is shared is post-processing of the release."""

    federated = False  # no training round: the release is the clients' only protocol round
    release_based = True
    plans_dpsgd_personal = False

    def shared_relation(self, *, hybrid_forward: bool) -> str:
        """Replace-one: the release is calibrated and its claim stated under it (the
        relation every row of docs/RESULTS.md compares on; stats-release.json gives
        the add/remove figure of the same release beside it)."""
        return "replace-one"

    def requirements(self, config: Config) -> Iterator[Requirement]:
        yield Requirement(config.stats.release, "stats.release",
                          f"true for strategy {self.name} (it is built on the feature statistics release)",
                          config.stats.release)
        yield from super().requirements(config)
        yield Requirement(not config.privacy.dpsgd_shared, "privacy.dpsgd_shared",
                          f"false for strategy {self.name} (no shared training on private records: "
                          "what is shared is post-processing of the release)", config.privacy.dpsgd_shared)
        yield Requirement(not config.privacy.dpsgd_personal, "privacy.dpsgd_personal",
                          f"false for strategy {self.name} (not planned)", config.privacy.dpsgd_personal)


class DPStats(ReleaseBased):
    """The public model fine-tuned on draws from the release denoises t above
    stats.handoff_t; below it each client samples its personal denoiser (raw records)
    or the public model (stats.below_handoff)."""

    name = "dpstats"
    needs_public = True

    def requirements(self, config: Config) -> Iterator[Requirement]:
        yield from super().requirements(config)
        T = config.diffusion.T
        yield Requirement(config.stats.handoff_t < T, "stats.handoff_t",
                          f"an integer in [1, T-1] for strategy {self.name} (T = {T})", config.stats.handoff_t)

    def _shared_text(self, c: SharedClaim) -> str:
        below = f"t > {c.handoff_t}" if c.handoff_t is not None else "t above the hand-off"
        return (f"the public model fine-tuned on class-conditional draws from the feature statistics release, "
                f"for {below}: post-processing of the release, no further charge "
                f"(max over clients {eps_text(c.epsilon)}, {c.accountant}, delta = {c.delta:g}); {c.label_note}")

    def personal_guarantee(self, default: str, claim: SharedClaim | None = None) -> str:
        if claim is not None and claim.below_handoff == "shared":
            return (f"none trained: below t = {claim.handoff_t} the client samples the public model "
                    "(no record of the client is used)")
        where = f" for t <= {claim.handoff_t}" if claim is not None and claim.handoff_t is not None else ""
        return (f"none for the client's own records: trained on its raw member records{where} without "
                "DP-SGD (it never leaves the client)")

    def samples_guarantee(self, default: str, claim: SharedClaim | None = None) -> str:
        style = "; " + STYLE_CLAUSE if claim is not None and claim.style_restored else ""
        if claim is not None and claim.below_handoff == "shared":
            return ("every record of every client: " + _release_text(claim)
                    + " (shared model above the hand-off, public model below)" + style)
        return ("none for the client's own records (its personal denoiser below the hand-off is trained on "
                "them without DP); other clients' records: "
                + (_release_text(claim) if claim is not None else "the release's guarantee") + style)


class DPStatsGaussian(ReleaseBased):
    """No diffusion model: each client draws from the released class-conditional
    Gaussians and maps the draws back to images in its own style."""

    name = "dpstats-gaussian"
    shares_model = False  # no model at all
    headline_artefact = "feature statistics release"

    def _shared_text(self, c: SharedClaim) -> str:
        return ("not trained: each client draws from the released class-conditional Gaussians "
                "(no diffusion model)")

    def personal_guarantee(self, default: str, claim: SharedClaim | None = None) -> str:
        return "none trained: no model"

    def samples_guarantee(self, default: str, claim: SharedClaim | None = None) -> str:
        style = "; " + STYLE_CLAUSE if claim is not None and claim.style_restored else ""
        return ("draws from the released class-conditional Gaussians, every record of every client: "
                + (_release_text(claim) if claim is not None else "the release's guarantee") + style)


# The registration: the one place a strategy's name is spelled (in the order help lists them).
STRATEGY_RULES: dict[str, StrategyRules] = {
    r.name: r for r in (PFDM(), LayerSplit(), FedAvg(), Local(), Centralized(), Hybrid(), PublicOnly(),
                        LocalPublic(), DPStats(), DPStatsGaussian())
}


def either(names: list[str]) -> str:
    """The strategies an option is allowed for, as refusals say it: `a`, `a or b`, `a, b or c`."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def names_where(predicate: Callable[[StrategyRules], bool]) -> list[str]:
    """The registered strategies whose rules satisfy `predicate`, in registration order."""
    return [name for name, rules in STRATEGY_RULES.items() if predicate(rules)]
