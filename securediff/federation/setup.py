"""Everything a run decides before it touches the disk (`RunSetup`, made by
`set_up_run`): data, split, partition, schedule, t0, model spec. A bad config or
dataset fails here, leaving nothing behind."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from securediff.config import Config
from securediff.data import Dataset, Partition, load_dataset, partition, split_test
from securediff.data.tint import apply_tint, client_tint
from securediff.diffusion.schedule import NoiseSchedule, make_schedule
from securediff.errors import ConfigError
from securediff.models.unet import UNetSpec
from securediff.privacy.forward import calibrate_t0, epsilon_classic, epsilon_exact, forward_sigma


@dataclass(frozen=True)
class RunSetup:
    """What a run decides before it touches the disk: data, split, partition,
    schedule, t0 and the model spec."""

    config: Config
    dataset: Dataset
    partition: Partition
    schedule: NoiseSchedule
    t0: int
    forward_epsilon: float  # by the configured accounting (exact or classic)
    forward_epsilon_exact: float
    forward_epsilon_classic: float
    spec: UNetSpec

    @property
    def client_ids(self) -> list[str]:
        return [c.client_id for c in self.partition.clients]

    def client_images(self, index: int, indices: np.ndarray) -> np.ndarray:
        """A client's records as it holds them (colored-digits: in its own tint)."""
        images = self.dataset.images[indices]
        if self.config.data.dataset == "colored-digits":
            images = apply_tint(images, client_tint(index, len(self.partition.clients)))
        return images.astype(np.float32)


def set_up_run(config: Config) -> RunSetup:
    data = config.data
    dataset = load_dataset(data.dataset, path=data.path or None)
    pool, _test = split_test(dataset.labels, test_fraction=data.test_fraction, seed=0)
    part = partition(
        dataset.labels, pool_indices=pool, num_clients=data.num_clients, scheme=data.partition,
        seed=data.partition_seed, alpha=data.alpha, shards_per_client=data.shards_per_client,
        quantity_sigma=data.quantity_sigma, holdout_fraction=data.holdout_fraction,
    )
    d = config.diffusion
    schedule = make_schedule(d.schedule, T=d.T, beta_start=d.beta_start, beta_end=d.beta_end)
    p = config.privacy
    if p.t0 is not None:
        t0 = p.t0
    else:
        t0 = calibrate_t0(target_epsilon=p.target_epsilon, clip_norm=p.clip_norm, delta=p.delta,
                          abar=schedule.abar, method=p.accounting)
    sigma = forward_sigma(float(schedule.abar[t0]))
    eps_exact = epsilon_exact(sigma=sigma, clip_norm=p.clip_norm, delta=p.delta)
    eps_classic = epsilon_classic(sigma=sigma, clip_norm=p.clip_norm, delta=p.delta)
    eps = eps_exact if p.accounting == "exact" else eps_classic
    if config.federation.strategy_rules.forward_noise and eps > p.target_epsilon * (1 + 1e-9):
        raise ConfigError(
            f"privacy.t0 = {t0} gives forward-noise epsilon {eps:.3f} ({p.accounting}) above "
            f"privacy.target_epsilon = {p.target_epsilon}; raise t0 or leave it unset to calibrate"
        )
    c, h, w = dataset.image_shape
    if h != w or h < 4 or h % (2 ** (len(config.model.channel_mults) - 1)) != 0:
        raise ConfigError(
            f"model.channel_mults = {config.model.channel_mults} does not fit {h}x{w} images "
            "(each level halves the size)"
        )
    spec = UNetSpec(in_channels=c, image_size=h, num_classes=dataset.num_classes,
                    base_channels=config.model.base_channels, channel_mults=config.model.channel_mults,
                    attention=config.model.attention, groups=config.model.groups)
    return RunSetup(config=config, dataset=dataset, partition=part, schedule=schedule, t0=t0,
                    forward_epsilon=eps, forward_epsilon_exact=eps_exact, forward_epsilon_classic=eps_classic,
                    spec=spec)
