"""Deliberately broken mechanisms, made by wrapping the real ones.

The self-check must catch the bugs that break a DP implementation without
changing what it claims. Each defect here wraps or subclasses the project's
own mechanism code; none re-implements its math:

- `ScaledNoiseSource`: the injected RandomSource with every Gaussian draw
  scaled (factor 0: no noise at all; 0.1: noise 10x smaller than claimed).
  The mechanism code is untouched; only what it draws is wrong.
- `clipping_disabled()`: `noise_once` runs with its clip step replaced by the
  identity (as if `clip_per_image` were skipped), for the context's duration.
- `UnclippedDPSGD`: the real `DPSGD` with per-sample clipping switched off
  (its clip bound is set to infinity while the clipped sum is taken; the
  noise is still scaled by the claimed clip norm).
- `PerCopyClippedDPSGD`: the real `DPSGD` with noise multiplicity K that
  clips each of a record's K copies separately (as repeating records for
  Opacus would, FACTS.md) instead of their mean: the record contributes K C
  to a sum whose noise is scaled to C.
- `min_rule_across_runs()`: the ledger's min rule (two views of ONE release,
  `artefact_epsilon`) applied across separate runs on the same data, so a
  ledger composing two runs claims the epsilon of one, for the context's
  duration.
- Fresh forward noise every epoch is a misuse of `noise_once` itself (a new
  data id per epoch slips past the ledger's re-noising guard); see
  `audits.canaries.forward`. An accountant told a smaller sample rate than
  the sampling uses is a misuse of `DPSGD` itself; see `audits.canaries.dpsgd`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

import securediff.privacy.forward as forward_module
import securediff.privacy.ledger as ledger_module
from securediff.errors import ConfigError
from securediff.privacy.accountants import compose_epsilon
from securediff.privacy.dpsgd import DPSGD
from securediff.rng import RandomSource


class ScaledNoiseSource(RandomSource):
    """A RandomSource whose Gaussian draws are `factor` times what they should be."""

    def __init__(self, inner: RandomSource, *, factor: float) -> None:
        if not (factor >= 0.0 and math.isfinite(factor)):
            raise ConfigError(f"factor must be >= 0 and finite, got {factor}")
        super().__init__(inner.random_bytes(32), private=inner.private)
        self.factor = float(factor)

    def normal_np(self, shape: tuple[int, ...] | int) -> np.ndarray:
        return super().normal_np(shape) * self.factor


def _no_clip(x: torch.Tensor, *, clip_norm: float) -> torch.Tensor:
    return x.detach().to(torch.float64)


@contextmanager
def clipping_disabled() -> Iterator[None]:
    """Within the context, `noise_once` does not clip (module attribute swapped, then restored)."""
    saved = forward_module.clip_per_image
    forward_module.clip_per_image = _no_clip
    try:
        yield
    finally:
        forward_module.clip_per_image = saved


class UnclippedDPSGD(DPSGD):
    """DP-SGD that forgets to clip per-sample gradients but still claims it does."""

    def _clipped_sum(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202 (same signature as DPSGD)
        saved = self.max_grad_norm
        self.max_grad_norm = math.inf
        try:
            return super()._clipped_sum(*args, **kwargs)
        finally:
            self.max_grad_norm = saved


class PerCopyClippedDPSGD(DPSGD):
    """DP-SGD with noise multiplicity that clips every copy of a record on its own."""

    def _clipped_sum(self, loss_fn, batch, b, k):  # noqa: ANN001, ANN202 (same signature as DPSGD)
        # Each copy becomes a record of its own (multiplicity 1): clipped to C separately.
        copies = tuple(t.repeat_interleave(k, dim=0) for t in batch)
        return super()._clipped_sum(loss_fn, copies, b * k, 1)


def _min_across_runs(events: list, *, delta: float, accountant: str) -> float:
    return min(compose_epsilon([e], delta=delta, accountant=accountant) for e in events)


@contextmanager
def min_rule_across_runs() -> Iterator[None]:
    """Within the context, a ledger's epsilon is the smallest of its events' epsilons."""
    saved = ledger_module.artefact_epsilon
    ledger_module.artefact_epsilon = _min_across_runs
    try:
        yield
    finally:
        ledger_module.artefact_epsilon = saved
