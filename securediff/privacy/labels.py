"""How class labels reach the shared path.

The paper conditions the shared denoiser on raw labels and treats them as
public; nothing protects them then. The alternative is k-ary randomized
response, a pure epsilon-DP release with its own ledger event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from securediff.errors import ConfigError
from securediff.privacy.ledger import Artefact, PrivacyLedger, RandomizedResponseEvent
from securediff.rng import RandomSource


def keep_probability(*, epsilon: float, num_classes: int) -> float:
    """e^eps / (e^eps + k - 1): the chance k-ary RR reports the true label."""
    return 1.0 / (1.0 + (num_classes - 1) * math.exp(-epsilon))


def randomized_response(
    labels: np.ndarray,
    *,
    epsilon: float,
    num_classes: int,
    source: RandomSource,
    ledger: PrivacyLedger,
    artefact: Artefact = "shared",
) -> np.ndarray:
    """Keep each label with probability e^eps/(e^eps+k-1), else report one of
    the other k-1 classes uniformly. The ledger is charged before any draw."""
    event = RandomizedResponseEvent(epsilon=epsilon, num_classes=num_classes, artefact=artefact)
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError("labels must be a 1-D integer array")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ConfigError(f"labels must lie in 0..{num_classes - 1}")
    ledger.charge(event)
    n = y.size
    keep = source.bernoulli(keep_probability(epsilon=epsilon, num_classes=num_classes), n)
    other = source.integers(num_classes - 1, n)
    other = other + (other >= y)  # skip the true label: uniform over the other k-1
    return np.where(keep, y, other).astype(np.int64)


@dataclass(frozen=True)
class LabelPolicy:
    """The run's declaration for labels: "public" (unprotected, stated in every
    privacy statement) or "randomized-response" at `epsilon`."""

    kind: Literal["public", "randomized-response"]
    epsilon: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "public":
            if self.epsilon is not None:
                raise ConfigError("a public label policy takes no epsilon")
        elif self.kind == "randomized-response":
            if self.epsilon is None or not (self.epsilon > 0 and math.isfinite(self.epsilon)):
                raise ConfigError("randomized-response labels need a positive, finite epsilon")
        else:
            raise ConfigError(f"unknown label policy {self.kind!r}")

    def statement(self) -> str:
        if self.kind == "public":
            return (
                "Labels are declared public: they reach the shared model unprotected "
                "and no differential-privacy guarantee covers them."
            )
        return (
            f"Labels reach the shared model through k-ary randomized response at "
            f"epsilon={self.epsilon:g} (pure DP, replace-one), charged to each client's ledger."
        )

    def apply(
        self, labels: np.ndarray, *, num_classes: int, source: RandomSource, ledger: PrivacyLedger
    ) -> np.ndarray:
        """The labels the shared path may see under this policy."""
        if self.kind == "public":
            return np.asarray(labels)
        return randomized_response(
            labels,
            epsilon=float(self.epsilon),  # type: ignore[arg-type]
            num_classes=num_classes,
            source=source,
            ledger=ledger,
        )
