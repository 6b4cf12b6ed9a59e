"""Shadow models for LiRA, trained by the project's own pipeline.

A `ShadowRecipe` repeats how the audited segment was trained: a fresh UNet
(`securediff.models.init.build`), Adam, `securediff.federation.training.train_steps`
on the segment, and for PFDM's shared segment the real forward-noise
mechanism first (`noise_once`, charged to a throwaway auditor's ledger). A
shadow sees one client-like data set for `steps` steps; it does not replay
the federated rounds, which is what "tiny by default" buys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from audits.attacks.target import Records, Target
from securediff.diffusion.schedule import NoiseSchedule
from securediff.errors import ConfigError
from securediff.federation.training import train_steps
from securediff.models.init import build
from securediff.models.unet import UNet, UNetSpec
from securediff.privacy.forward import noise_once
from securediff.privacy.ledger import PrivacyLedger
from securediff.rng import RandomSource


def auditor_source(generator: torch.Generator) -> RandomSource:
    """A (non-private) RandomSource keyed from the auditor's torch generator."""
    key = bytes(torch.randint(0, 256, (32,), generator=generator, dtype=torch.uint8).tolist())
    return RandomSource(key, private=False)


def throwaway_ledger(*, delta: float = 1e-5) -> PrivacyLedger:
    """The auditor's own ledger for mechanisms it runs on data it owns."""
    return PrivacyLedger(client_id="auditor", budget_epsilon=1e12, delta=delta, accountant="exact")


@dataclass(frozen=True)
class ShadowRecipe:
    name: str
    spec: UNetSpec
    schedule: NoiseSchedule
    start: int
    end: int
    steps: int
    batch_size: int
    lr: float
    label_dropout: float = 0.0
    clip_norm: float | None = None  # start > 0: forward-noise the records once, as the client did

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("shadow training needs steps >= 1 and batch_size >= 1")
        if self.start > 0 and self.clip_norm is None:
            raise ConfigError("a shadow of a segment starting after 0 needs the clip norm")

    def train(self, records: Records, generator: torch.Generator) -> Target:
        model = build(lambda: UNet(self.spec), generator=generator)
        x = records.x.float()
        if self.start > 0:
            x = noise_once(x.double(), clip_norm=float(self.clip_norm), t0=self.start,
                           abar=self.schedule.abar, source=auditor_source(generator),
                           ledger=throwaway_ledger(), data_id="shadow").float()
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        train_steps(model, opt, x, records.y, steps=self.steps, batch_size=self.batch_size,
                    schedule=self.schedule, start=self.start, end=self.end, generator=generator,
                    null_label=self.spec.null_label, label_dropout=self.label_dropout)
        return Target(name=f"{self.name}/shadow", model=model, start=self.start, end=self.end,
                      schedule=self.schedule, null_label=self.spec.null_label,
                      clip_norm=self.clip_norm)
