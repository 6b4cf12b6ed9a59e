"""What the aggregator and the nodes of a training run across machines agree on.

The aggregator reads the run's securediff config (TOML, as `securediff train`
takes it) and sends it as text with every `describe` and `train` request; each
node parses and validates it again and merges its own data settings into it.
The shared model's weights travel as little-endian float32 bytes in the order
of `Strategy.shared_params` (the order `flat` and `load_flat` use).
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass

import numpy as np

from securediff.config import Config, from_dict
from securediff.diffusion.schedule import NoiseSchedule, make_schedule
from securediff.errors import ConfigError
from securediff.models.unet import UNetSpec
from securediff.strategy_rules import names_where

# Strategies a node can run: the shared model's update needs nothing from other
# clients (hybrid's distributed DP-SGD runs one secagg round per step: in process only).
FLOWER_STRATEGIES = tuple(names_where(lambda rules: rules.on_flower))


def parse_config(text: str) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the run's securediff config is not valid TOML: {exc}") from None
    return check_supported(from_dict(raw))


def check_supported(config: Config) -> Config:
    f, p = config.federation, config.privacy
    if not f.strategy_rules.on_flower:
        raise ConfigError(f"federation.strategy = {f.strategy!r}: across machines only "
                          f"{', '.join(FLOWER_STRATEGIES)} train on the nodes")
    if p.clipping != "fixed":
        # Its clip norm C is a private quantile over every client's image norms, and its
        # update clip moves with bits only the aggregate carries: state across nodes.
        raise ConfigError("privacy.clipping = adaptive needs state shared by all clients (a "
                          "quantile over every node's data) and runs only in securediff train; "
                          "use privacy.clipping = fixed across machines")
    if p.client_level:
        # The Flower server applies the plain weighted mean: it neither noises the sum
        # nor charges the client-level event, so the claim would be false.
        raise ConfigError("privacy.client_level runs only in securediff train (the Flower server "
                          "does not add client-level noise yet)")
    if config.public.dataset:
        # The nodes would start from models the server never pretrained.
        raise ConfigError("public.dataset (public pretraining) runs only in securediff train so far")
    if config.stats.release:
        # The statistics release is a round of its own before training, which only the
        # in-process run plays: a node would train with no release and no charge for it.
        raise ConfigError("stats.release runs only in securediff train so far (the Flower "
                          "server does not run the statistics release round)")
    return config


@dataclass(frozen=True)
class ModelSetup:
    """The parts of `securediff.federation.setup.RunSetup` that `build_strategy` reads,
    for the aggregator, which holds no data."""

    config: Config
    spec: UNetSpec
    schedule: NoiseSchedule
    t0: int


def model_setup(config: Config, *, in_channels: int, image_size: int, num_classes: int,
                t0: int) -> ModelSetup:
    d, m = config.diffusion, config.model
    spec = UNetSpec(in_channels=in_channels, image_size=image_size, num_classes=num_classes,
                    base_channels=m.base_channels, channel_mults=m.channel_mults,
                    attention=m.attention, groups=m.groups)
    schedule = make_schedule(d.schedule, T=d.T, beta_start=d.beta_start, beta_end=d.beta_end)
    return ModelSetup(config=config, spec=spec, schedule=schedule, t0=t0)


def encode_weights(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_weights(data: bytes, *, length: int) -> np.ndarray:
    if len(data) != 4 * length:
        raise ConfigError(f"shared weights of {len(data)} bytes for a model of {length} "
                          "parameters: the node's model is not the aggregator's")
    return np.frombuffer(data, dtype="<f4").astype(np.float64)


def weights_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
