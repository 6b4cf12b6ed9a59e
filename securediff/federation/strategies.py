"""Personalization strategies: what is shared, what each client keeps, and
which denoiser handles which timesteps when a client samples.

- `pfdm`: PFDM (Patel et al. 2025). A shared denoiser for t in (t0, T], trained
  only on each client's once-noised x~; a personal denoiser for t in [1, t0] on
  the client's raw data, never leaving it.
- `layer-split`: one model per client; everything but the personal layers (the
  label embedding and the output head) is averaged. DP-SGD, when on, covers
  the whole client model.
- `fedavg`: the whole model is averaged (no DP); every client ends with it.
- `local`: no collaboration; each client trains a full model alone.
- `centralized`: pooled member data, one model (an upper bound, not deployable).
- `public-only`: the model pretrained on public data ([public]), no private
  training; `local+public`: `local` starting from that model.
- `hybrid`: the shared denoiser (all timesteps) is trained by distributed
  DP-SGD through secure aggregation (securediff/federation/distributed.py);
  after the last round each client copies it and fine-tunes the copy on its
  own raw data for t in [1, personal_t]. Sampling uses the shared denoiser
  above personal_t and the personal one below. With `federation.hybrid_forward`
  each client also noises its data once at t0 (as PFDM); every step then
  learns t <= t0 from the raw records (clipped, Skellam-noised) and t > t0 from
  x~ (clipped, no noise: a post-processing of x~).
- `dpstats`: built on the [stats] release (docs/stats_release.md). The public
  model, fine-tuned by the server on class-conditional draws from the release
  (post-processing: no charge), denoises t in (stats.handoff_t, T]; below it each
  client samples its personal denoiser, trained on its raw records, or the public
  model (stats.below_handoff). No training round: the release is the clients' only
  protocol round. Where the feature map drops a style (colour-normalised-grey
  drops each channel's brightness: a client's tint), each client puts its own
  back on its samples, from its own records.
- `dpstats-gaussian`: no diffusion model; each client's samples are draws from the
  released class-conditional Gaussians, in its own style.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from securediff.data.tint import apply_tint, client_tint
from securediff.diffusion.sampling import Segment
from securediff.diffusion.schedule import NoiseSchedule
from securediff.federation.clients import Client
from securediff.federation.training import dp_train_steps, train_steps
from securediff.models.init import build
from securediff.models.unet import UNet, UNetSpec
from securediff.privacy.adaptive import AdaptiveClipDPSGD, split_noise
from securediff.privacy.dpsgd import DPSGD
from securediff.privacy.stats_decode import ReleasedStats, draw_samples
from securediff.privacy.stats_images import (
    STYLE_FREE_MAPS,
    Style,
    features_to_images,
    restyle,
    style_of,
)
from securediff.rng import RandomSource
from securediff.strategy_rules import STRATEGY_RULES, StrategyRules

if TYPE_CHECKING:
    from securediff.federation.setup import RunSetup
    from securediff.federation.stats_phase import StoredRelease


@dataclass(frozen=True)
class TrainSettings:
    batch_size: int
    lr: float
    label_dropout: float
    local_steps: int
    personal_steps_per_round: int
    max_grad_norm: float
    noise_multiplicity: int
    dpsgd_shared: bool
    dpsgd_personal: bool
    secure_noise: bool = False
    clip_quantile: float = 0.5  # adaptive DP-SGD (DPSGDParams.count_noise set): the target quantile
    clip_lr: float = 0.2


@dataclass(frozen=True)
class DPSGDParams:
    """DP-SGD parameters fixed before training (calibrated to the target epsilon)."""

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    count_noise: float | None = None  # adaptive clipping: std of the unclipped count


def flat(params: Iterator[torch.Tensor] | list[torch.Tensor]) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in params]).double().numpy()


def load_flat(params: list[torch.Tensor], vector: np.ndarray) -> None:
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(torch.from_numpy(vector[offset : offset + n]).view_as(p).to(p.dtype))
            offset += n


class Strategy:
    rules: ClassVar[StrategyRules]  # what the strategy plans, requires and claims
    # The global model's optimizer where the server trains that model itself (checkpointed with it).
    optimizer: torch.optim.Optimizer | None = None

    def __init__(self, *, spec: UNetSpec, schedule: NoiseSchedule, t0: int, settings: TrainSettings) -> None:
        self.spec = spec
        self.schedule = schedule
        self.t0 = t0
        self.settings = settings
        self.global_model: UNet | None = None
        # Whether the shared path trains on the clients' once-noised x~.
        self.uses_noised_data = self.rules.forward_noise

    @classmethod
    def from_setup(cls, setup: RunSetup, **common: Any) -> Strategy:
        """The strategy for `setup`; `common` holds what every strategy takes
        (spec, schedule, t0, settings)."""
        return cls(**common)

    @property
    def federated(self) -> bool:
        return self.rules.federated

    @property
    def distributed(self) -> bool:
        """The runner trains the shared model by distributed DP-SGD."""
        return self.rules.distributed

    # -- set-up ------------------------------------------------------------------
    def new_model(self, generator: torch.Generator) -> UNet:
        return build(lambda: UNet(self.spec), generator=generator)

    def init_global(self, generator: torch.Generator) -> None:
        self.global_model = self.new_model(generator)

    def init_client(self, client: Client, generator: torch.Generator) -> None:
        """Create what the client keeps (personal model and its optimizer)."""

    def _new_personal_model(self, client: Client, generator: torch.Generator) -> None:
        """The client's own model, freshly initialised, and its Adam."""
        client.model = self.new_model(generator)
        client.optimizer = torch.optim.Adam(client.model.parameters(), lr=self.settings.lr)

    def _init_global_with_optimizer(self, generator: torch.Generator) -> None:
        """The global model and the Adam that trains it on the aggregator's side."""
        Strategy.init_global(self, generator)
        self.optimizer = torch.optim.Adam(self.global_model.parameters(), lr=self.settings.lr)

    def attach_clients(self, clients: list[Client]) -> None:
        """Called once the run's clients exist (on a resume too)."""

    # -- the shared part -----------------------------------------------------------
    def shared_params(self, model: nn.Module) -> list[torch.Tensor]:
        return list(model.parameters())

    def global_vector(self) -> np.ndarray:
        return flat(self.shared_params(self.global_model))

    def apply_global(self, vector: np.ndarray) -> None:
        load_flat(self.shared_params(self.global_model), vector)

    def local_update(self, client: Client, round_index: int, dp: DPSGDParams | None) -> np.ndarray:
        """Train a copy of the shared model on the client's shared-path data;
        return the change of the shared parameters."""
        raise NotImplementedError

    def personal_train(self, client: Client, round_index: int, dp: DPSGDParams | None) -> None:
        """Train what the client keeps for one round's share of its steps."""

    def finish_round(self, clients: list[Client]) -> None:
        """After the round's aggregate (or client-level noise) moved the global model."""

    def server_round(self, round_index: int, source: RandomSource) -> None:
        """What the server trains itself in a round, after the clients' part."""

    def segments(self, client: Client) -> list[Segment]:
        raise NotImplementedError

    def finish_samples(self, client: Client, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The client's samples of class `labels` as it releases them (float (N, C, H, W) in [-1, 1])."""
        return images

    def direct_samples(self, client: Client, labels: np.ndarray, *, generator: torch.Generator
                       ) -> np.ndarray | None:
        """Samples drawn without a diffusion model, or None: the client samples `segments`."""
        return None

    def attach_release(self, release: StoredRelease) -> None:
        """Called with the run's [stats] release once it is committed (or loaded on resume)."""

    def release_use(self) -> dict[str, Any] | None:
        """How the strategy uses the [stats] release, for the privacy statement (None: it does not)."""
        return None

    # -- helpers -------------------------------------------------------------------
    def _train(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, client: Client, *, x: torch.Tensor,
        y: torch.Tensor, steps: int, start: int, end: int, generator: torch.Generator,
        dp: DPSGDParams | None, artefact: str, purpose: str, round_index: int,
    ) -> float:
        common = dict(schedule=self.schedule, start=start, end=end, generator=generator,
                      null_label=self.spec.null_label, label_dropout=self.settings.label_dropout)
        if dp is None:
            return train_steps(model, optimizer, x, y, steps=steps,
                               batch_size=self.settings.batch_size, **common)
        adaptive = dp.count_noise is not None
        dpsgd = DPSGD(
            model=model, optimizer=optimizer, max_grad_norm=self.settings.max_grad_norm,
            noise_multiplier=split_noise(dp.noise_multiplier, dp.count_noise) if adaptive else dp.noise_multiplier,
            expected_batch_size=dp.sample_rate * x.shape[0],
            source=client.private_stream(f"dpsgd-{purpose}", round_index),
            ledger=None if adaptive else client.ledger,
            noise_multiplicity=self.settings.noise_multiplicity, sample_rate=dp.sample_rate,
            artefact=artefact, secure_noise=self.settings.secure_noise,
            # PFDM's shared model sees only x~: its DP-SGD is a second view (ledger.artefact_epsilon).
            input_data="noised" if artefact == "shared" and self.uses_noised_data else "raw",
        )
        if adaptive:  # the wrapper charges the joint event and moves the norm each step
            dpsgd = AdaptiveClipDPSGD(
                inner=dpsgd, ledger=client.ledger, noise_multiplier=dp.noise_multiplier,
                count_noise=dp.count_noise, sample_rate=dp.sample_rate,
                expected_batch_size=dp.sample_rate * x.shape[0],
                clip=client.sample_clip.get(purpose, self.settings.max_grad_norm),
                target_quantile=self.settings.clip_quantile, lr=self.settings.clip_lr,
                source=client.private_stream(f"clip-count-{purpose}", round_index), artefact=artefact)
        dpsgd.reserve(steps)  # write-ahead: the cost is recorded before the steps run
        loss = dp_train_steps(dpsgd, x, y, steps=steps, sample_rate=dp.sample_rate,
                              source=client.private_stream(f"poisson-{purpose}", round_index), **common)
        dpsgd.close()
        if adaptive:
            client.sample_clip[purpose] = dpsgd.clip
        return loss

    def _fresh_copy(self, model: nn.Module) -> tuple[nn.Module, torch.optim.Optimizer]:
        work = copy.deepcopy(model)
        return work, torch.optim.Adam(work.parameters(), lr=self.settings.lr)


class PFDM(Strategy):
    rules = STRATEGY_RULES["pfdm"]

    def init_client(self, client: Client, generator: torch.Generator) -> None:
        self._new_personal_model(client, generator)

    def local_update(self, client: Client, round_index: int, dp: DPSGDParams | None) -> np.ndarray:
        work, opt = self._fresh_copy(self.global_model)
        before = self.global_vector()
        # Inputs for t > t0 continue the forward process from x~ only (loss.py).
        self._train(work, opt, client, x=client.x_shared, y=client.y_shared,
                    steps=self.settings.local_steps, start=self.t0, end=self.schedule.T,
                    generator=client.generator("shared", round_index), dp=dp, artefact="shared",
                    purpose="shared", round_index=round_index)
        return flat(self.shared_params(work)) - before

    def personal_train(self, client: Client, round_index: int, dp: DPSGDParams | None) -> None:
        self._train(client.model, client.optimizer, client, x=client.x, y=client.y,
                    steps=self.settings.personal_steps_per_round, start=0, end=self.t0,
                    generator=client.generator("personal", round_index), dp=dp, artefact="personal",
                    purpose="personal", round_index=round_index)

    def segments(self, client: Client) -> list[Segment]:
        return [Segment(self.global_model, self.t0, self.schedule.T), Segment(client.model, 0, self.t0)]


class FedAvg(Strategy):
    rules = STRATEGY_RULES["fedavg"]

    def local_update(self, client: Client, round_index: int, dp: DPSGDParams | None) -> np.ndarray:
        work, opt = self._fresh_copy(self.global_model)
        before = self.global_vector()
        self._train(work, opt, client, x=client.x, y=client.y, steps=self.settings.local_steps,
                    start=0, end=self.schedule.T, generator=client.generator("shared", round_index),
                    dp=dp, artefact="shared", purpose="shared", round_index=round_index)
        return flat(self.shared_params(work)) - before

    def segments(self, client: Client) -> list[Segment]:
        return [Segment(self.global_model, 0, self.schedule.T)]


class LayerSplit(Strategy):
    rules = STRATEGY_RULES["layer-split"]

    def shared_params(self, model: nn.Module) -> list[torch.Tensor]:
        return [p for n, p in model.named_parameters() if not n.startswith(self.rules.personal_layers)]

    def init_client(self, client: Client, generator: torch.Generator) -> None:
        self._new_personal_model(client, generator)

    def local_update(self, client: Client, round_index: int, dp: DPSGDParams | None) -> np.ndarray:
        before = self.global_vector()
        load_flat(self.shared_params(client.model), before)
        opt = torch.optim.Adam(client.model.parameters(), lr=self.settings.lr)
        self._train(client.model, opt, client, x=client.x, y=client.y, steps=self.settings.local_steps,
                    start=0, end=self.schedule.T, generator=client.generator("shared", round_index),
                    dp=dp, artefact="shared", purpose="shared", round_index=round_index)
        return flat(self.shared_params(client.model)) - before

    def finish_round(self, clients: list[Client]) -> None:
        for client in clients:
            load_flat(self.shared_params(client.model), self.global_vector())

    def segments(self, client: Client) -> list[Segment]:
        return [Segment(client.model, 0, self.schedule.T)]


class Local(Strategy):
    rules = STRATEGY_RULES["local"]

    def init_client(self, client: Client, generator: torch.Generator) -> None:
        self._new_personal_model(client, generator)

    def personal_train(self, client: Client, round_index: int, dp: DPSGDParams | None) -> None:
        steps = self.settings.personal_steps_per_round + self.settings.local_steps
        self._train(client.model, client.optimizer, client, x=client.x, y=client.y, steps=steps,
                    start=0, end=self.schedule.T, generator=client.generator("personal", round_index),
                    dp=dp, artefact="personal", purpose="personal", round_index=round_index)

    def segments(self, client: Client) -> list[Segment]:
        return [Segment(client.model, 0, self.schedule.T)]


class LocalPublic(Local):
    """`local` starting from the public model (the runner seeds every personal model
    with the publicly pretrained shared one): what public data alone buys a client."""

    rules = STRATEGY_RULES["local+public"]


class PublicOnly(Strategy):
    """The publicly pretrained model alone, no private training: the floor any
    private collaboration must beat. Samples are drawn grey and, where clients
    differ in colour (colored-digits), given the client's own tint."""

    rules = STRATEGY_RULES["public-only"]

    def __init__(self, *, tints: list[np.ndarray] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tints = tints

    @classmethod
    def from_setup(cls, setup: RunSetup, **common: Any) -> Strategy:
        if setup.config.data.dataset != "colored-digits":  # the one data set whose clients differ in colour
            return cls(**common)
        n = setup.partition.num_clients
        return cls(tints=[client_tint(i, n) for i in range(n)], **common)

    def segments(self, client: Client) -> list[Segment]:
        return [Segment(self.global_model, 0, self.schedule.T)]

    def finish_samples(self, client: Client, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if self.tints is None:
            return images
        grey = np.repeat(images.mean(axis=1, keepdims=True), images.shape[1], axis=1)
        return apply_tint(np.clip(grey, -1.0, 1.0), self.tints[client.index])


class Hybrid(Strategy):
    """Shared denoiser by distributed DP-SGD (the runner drives its steps through
    the protocol); personal fine-tuning at low timesteps after the last round."""

    rules = STRATEGY_RULES["hybrid"]

    def __init__(self, *, rounds: int, personal_t: int, personal_steps: int, forward: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        # federation.hybrid_forward: PFDM's x~ at t0 feeds the steps' t > t0 part.
        self.uses_noised_data = forward
        self.rounds = rounds
        self.personal_t = personal_t
        self.personal_steps = personal_steps
        self.optimizer: torch.optim.Optimizer | None = None

    @classmethod
    def from_setup(cls, setup: RunSetup, **common: Any) -> Strategy:
        cfg = setup.config
        return cls(rounds=cfg.federation.rounds, personal_t=cfg.federation.personal_t,
                   personal_steps=cfg.training.personal_steps, forward=cfg.federation.hybrid_forward, **common)

    def init_global(self, generator: torch.Generator) -> None:
        self._init_global_with_optimizer(generator)

    def init_client(self, client: Client, generator: torch.Generator) -> None:
        # Overwritten with the shared weights before the client's fine-tuning.
        self._new_personal_model(client, generator)

    def personal_train(self, client: Client, round_index: int, dp: DPSGDParams | None) -> None:
        if round_index != self.rounds - 1:
            return
        client.model.load_state_dict(self.global_model.state_dict())
        client.optimizer = torch.optim.Adam(client.model.parameters(), lr=self.settings.lr)
        self._train(client.model, client.optimizer, client, x=client.x, y=client.y,
                    steps=self.personal_steps, start=0, end=self.personal_t,
                    generator=client.generator("personal", round_index), dp=dp, artefact="personal",
                    purpose="personal", round_index=round_index)

    def segments(self, client: Client) -> list[Segment]:
        return [Segment(self.global_model, self.personal_t, self.schedule.T),
                Segment(client.model, 0, self.personal_t)]


class _ReleaseBased(Strategy):
    """What the strategies built on the [stats] release share: the release (attached
    by the runner) and each client's style, restored on its side from its own member
    records where the feature map removed it (securediff/privacy/stats_images.py)."""

    def __init__(self, *, feature_map: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.feature_map = feature_map
        self.image_shape = (self.spec.in_channels, self.spec.image_size, self.spec.image_size)
        self.num_classes = self.spec.num_classes
        self.release: ReleasedStats | None = None
        self._styles: dict[int, Style] = {}

    @property
    def restores_style(self) -> bool:
        return self.feature_map not in STYLE_FREE_MAPS

    def attach_release(self, release: StoredRelease) -> None:
        self.release = release.stats

    def _released(self) -> ReleasedStats:
        if self.release is None:
            raise RuntimeError(f"strategy {self.rules.name} has no statistics release attached")
        return self.release

    def client_style(self, client: Client) -> Style | None:
        """The client's style from its own member records (None: the feature map keeps all)."""
        if not self.restores_style:
            return None
        if client.index not in self._styles:
            self._styles[client.index] = style_of(client.x.cpu().numpy(), client.y.cpu().numpy(),
                                                  self.num_classes)
        return self._styles[client.index]


class DPStats(_ReleaseBased):
    """The public model fine-tuned on draws from the release denoises t in
    (handoff_t, T]; below, each client samples its personal denoiser (trained on its
    raw records, as PFDM's) or, with below_handoff = "shared", its untouched copy of
    the public model. Samples are given the client's style as post-processing."""

    rules = STRATEGY_RULES["dpstats"]
    # Images drawn per round to fine-tune on (a pool; train_steps samples batches from it).
    POOL = 8192

    def __init__(self, *, handoff_t: int, below_handoff: str, finetune_steps: int, rounds: int,
                 public_style: Style | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.handoff_t = handoff_t
        self.below_handoff = below_handoff
        self.finetune_steps = finetune_steps
        self.rounds = rounds
        self.public_style = public_style

    @classmethod
    def from_setup(cls, setup: RunSetup, **common: Any) -> Strategy:
        from securediff.federation.public import load_public

        s = setup.config.stats
        public_style = None
        if s.feature_map not in STYLE_FREE_MAPS:
            # Public data (nothing to hide): its augmentations from a fixed generator.
            public = load_public(setup, generator=np.random.default_rng(0))
            public_style = style_of(public.images, public.labels, setup.dataset.num_classes)
        return cls(handoff_t=s.handoff_t, below_handoff=s.below_handoff, finetune_steps=s.finetune_steps,
                   rounds=setup.config.federation.rounds, public_style=public_style,
                   feature_map=s.feature_map, **common)

    def init_global(self, generator: torch.Generator) -> None:
        self._init_global_with_optimizer(generator)

    def init_client(self, client: Client, generator: torch.Generator) -> None:
        # The runner loads the public weights into it; with below_handoff = "shared" it stays so.
        self._new_personal_model(client, generator)

    def steps_in_round(self, round_index: int) -> int:
        """finetune_steps spread over the rounds, the first rounds taking the remainder."""
        base, extra = divmod(self.finetune_steps, self.rounds)
        return base + (1 if round_index < extra else 0)

    def draw_images(self, count: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`count` images from the release in the public style: labels in proportion to
        the public per-class counts, features N(mean of the class, covariance)."""
        stats = self._released()
        p = stats.counts / stats.counts.sum()
        labels = generator.choice(len(p), size=count, p=p)
        features = draw_samples(stats, labels, generator=generator)
        images = features_to_images(features, labels, feature_map=self.feature_map,
                                    shape=self.image_shape, style=self.public_style)
        return images, labels

    def server_round(self, round_index: int, source: RandomSource) -> None:
        steps = self.steps_in_round(round_index)
        if steps == 0:
            return
        images, labels = self.draw_images(min(self.POOL, steps * self.settings.batch_size),
                                          source.child(f"dpstats/draws/round-{round_index}").numpy_generator())
        device = next(self.global_model.parameters()).device
        train_steps(self.global_model, self.optimizer, torch.from_numpy(images).to(device),
                    torch.from_numpy(labels).to(device), steps=steps, batch_size=self.settings.batch_size,
                    schedule=self.schedule, start=self.handoff_t, end=self.schedule.T,
                    generator=source.child(f"dpstats/training/round-{round_index}").torch_generator(),
                    null_label=self.spec.null_label, label_dropout=self.settings.label_dropout)

    def personal_train(self, client: Client, round_index: int, dp: DPSGDParams | None) -> None:
        if self.below_handoff != "personal":
            return
        self._train(client.model, client.optimizer, client, x=client.x, y=client.y,
                    steps=self.settings.personal_steps_per_round, start=0, end=self.handoff_t,
                    generator=client.generator("personal", round_index), dp=dp, artefact="personal",
                    purpose="personal", round_index=round_index)

    def segments(self, client: Client) -> list[Segment]:
        return [Segment(self.global_model, self.handoff_t, self.schedule.T),
                Segment(client.model, 0, self.handoff_t)]

    def finish_samples(self, client: Client, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if not self.restores_style:
            return images
        return restyle(images, labels, feature_map=self.feature_map, style=self.client_style(client))

    def release_use(self) -> dict[str, Any]:
        return {"handoff_t": self.handoff_t, "below_handoff": self.below_handoff,
                "style_restored": self.restores_style}


class DPStatsGaussian(_ReleaseBased):
    """No diffusion model: each client's samples are draws from the released
    class-conditional Gaussians, mapped back to images in the client's style."""

    rules = STRATEGY_RULES["dpstats-gaussian"]

    @classmethod
    def from_setup(cls, setup: RunSetup, **common: Any) -> Strategy:
        return cls(feature_map=setup.config.stats.feature_map, **common)

    def segments(self, client: Client) -> list[Segment]:
        return []  # nothing to denoise with (an audit finds no denoiser)

    def direct_samples(self, client: Client, labels: np.ndarray, *, generator: torch.Generator
                       ) -> np.ndarray:
        features = draw_samples(self._released(), labels, generator=generator)
        return features_to_images(features, labels, feature_map=self.feature_map, shape=self.image_shape,
                                  style=self.client_style(client))

    def release_use(self) -> dict[str, Any]:
        return {"style_restored": self.restores_style}


STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    cls.rules.name: cls for cls in (PFDM, FedAvg, LayerSplit, Local, Hybrid, LocalPublic, PublicOnly,
                                    DPStats, DPStatsGaussian)
}


class Centralized(Strategy):
    """Pooled member data of every client, one model: an upper bound only."""

    rules = STRATEGY_RULES["centralized"]

    def __init__(self, *, centralized_steps: int, rounds: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.steps_per_round = max(1, centralized_steps // rounds)
        self.optimizer: torch.optim.Optimizer | None = None
        self.pooled: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_setup(cls, setup: RunSetup, **common: Any) -> Strategy:
        cfg = setup.config
        return cls(centralized_steps=cfg.training.centralized_steps, rounds=cfg.federation.rounds, **common)

    def init_global(self, generator: torch.Generator) -> None:
        self._init_global_with_optimizer(generator)

    def attach_clients(self, clients: list[Client]) -> None:
        self.pooled = (torch.cat([c.x for c in clients]), torch.cat([c.y for c in clients]))

    def server_round(self, round_index: int, source: RandomSource) -> None:
        x, y = self.pooled
        generator = source.child(f"centralized/round-{round_index}").torch_generator()
        train_steps(self.global_model, self.optimizer, x, y, steps=self.steps_per_round,
                    batch_size=self.settings.batch_size, schedule=self.schedule, start=0,
                    end=self.schedule.T, generator=generator, null_label=self.spec.null_label,
                    label_dropout=self.settings.label_dropout)

    def segments(self, client: Client) -> list[Segment]:
        return [Segment(self.global_model, 0, self.schedule.T)]


STRATEGY_CLASSES[Centralized.rules.name] = Centralized
