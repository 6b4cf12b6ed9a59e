"""Per-client state of a simulated federation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from securediff.privacy.ledger import PrivacyLedger
from securediff.rng import RandomSource


@dataclass
class Client:
    """One organisation: its member data, its private randomness and its ledger.

    `x`/`y` are the member records (the holdout is never trained on). `x_shared`
    and `y_shared` are what the shared-model trainer may see: for PFDM the
    once-noised images and the labels as declared (public, or randomized
    response), never the clean images.
    """

    client_id: str
    index: int
    x: torch.Tensor
    y: torch.Tensor
    ledger: PrivacyLedger
    source: RandomSource = field(repr=False)
    x_shared: torch.Tensor | None = None
    y_shared: torch.Tensor | None = None
    model: nn.Module | None = None  # personal (pfdm), local, or layer-split model
    optimizer: torch.optim.Optimizer | None = None
    tint: np.ndarray | None = None  # colour of colored-digits clients
    history: list[dict] = field(default_factory=list)
    # Adaptive DP-SGD: the per-sample clip norm each training purpose reached.
    sample_clip: dict[str, float] = field(default_factory=dict)

    @property
    def num_members(self) -> int:
        return int(self.x.shape[0])

    def generator(self, purpose: str, round_index: int) -> torch.Generator:
        """Randomness for one round and purpose; derived from the client's stream
        by label so a resumed run draws exactly what an uninterrupted one would."""
        return self.source.child(f"{purpose}/round-{round_index}").torch_generator()

    def private_stream(self, purpose: str, round_index: int) -> RandomSource:
        return self.source.child(f"{purpose}/round-{round_index}")
