"""DP-SGD with noise multiplicity (DPDM, Dockhorn et al. 2022).

Per-sample gradients come from securediff.privacy.per_sample (one forward and
one backward pass, no per-sample tensor for large layers; docs/performance.md
has its speed against Opacus), or, with `per_sample="opacus"`, from Opacus'
GradSampleModule (hooks mode, sum reduction), kept as an independent
reference. Clipping and noise happen here so the noise comes from our
`RandomSource` and not from torch's global generator. With noise
multiplicity K each sample is repeated K times (its copies contiguous, each
with its own diffusion noise and timestep); the K per-copy gradients are
averaged BEFORE clipping, so a sample contributes at most C however many
copies it has (FACTS.md: averaging after backward matches explicit
per-sample gradients; repeating samples for Opacus would clip each copy).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from securediff.errors import ConfigError, PrivacyError
from securediff.privacy.ledger import Artefact, DPSGDEvent, PrivacyLedger
from securediff.privacy.per_sample import PerSampleClipper
from securediff.rng import RandomSource

_CLIP_STABILITY = 1e-6


class UnsupportedModelError(ConfigError):
    """The model has layers DP-SGD cannot handle per sample (e.g. BatchNorm)."""


def validate_for_dp(model: nn.Module) -> None:
    """Raise UnsupportedModelError listing what Opacus' validator rejects."""
    from opacus.validators import ModuleValidator  # Opacus (and scipy.stats) only when DP-SGD runs

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise UnsupportedModelError(
            "model is not valid for DP-SGD: " + "; ".join(str(e) for e in errors)
        )


def poisson_sample(n: int, *, sample_rate: float, source: RandomSource) -> np.ndarray:
    """Indices of a Poisson sample: each of n records in independently with
    probability `sample_rate`. May be empty; the accounting assumes exactly this."""
    if not 0.0 < sample_rate <= 1.0:
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(source.bernoulli(sample_rate, n)).astype(np.int64)


PerCopyLoss = Callable[..., torch.Tensor]

_noise_worker: ThreadPoolExecutor | None = None
_noise_worker_lock = threading.Lock()


def _noise_pool() -> ThreadPoolExecutor:
    """One thread for every DPSGD's noise: draws run in their submission order."""
    global _noise_worker
    with _noise_worker_lock:
        if _noise_worker is None:
            _noise_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpsgd-noise")
        return _noise_worker


class DPSGD:
    """One noisy, clipped optimizer step per Poisson batch.

    `ledger` is required but may be None (the caller then accounts itself):
    with a ledger, `reserve(steps)` charges DP-SGD steps write-ahead and
    `step` refuses to run more steps than were reserved.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float,
        noise_multiplier: float,
        expected_batch_size: float,
        source: RandomSource,
        ledger: PrivacyLedger | None,
        noise_multiplicity: int = 1,
        sample_rate: float | None = None,
        artefact: Artefact = "shared",
        secure_noise: bool = False,
        per_sample: str = "fused",
        input_data: str = "raw",
        prefetch_noise: bool = True,
    ) -> None:
        if not (max_grad_norm > 0.0 and math.isfinite(max_grad_norm)):
            raise ConfigError(f"max_grad_norm must be positive, got {max_grad_norm}")
        if not (noise_multiplier >= 0.0 and math.isfinite(noise_multiplier)):
            raise ConfigError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
        if not expected_batch_size > 0.0:
            raise ConfigError(f"expected_batch_size must be positive, got {expected_batch_size}")
        if isinstance(noise_multiplicity, bool) or int(noise_multiplicity) != noise_multiplicity:
            raise ConfigError(f"noise_multiplicity must be an integer, got {noise_multiplicity!r}")
        if noise_multiplicity < 1:
            raise ConfigError(f"noise_multiplicity must be >= 1, got {noise_multiplicity}")
        if ledger is not None and sample_rate is None:
            raise ConfigError("a ledger needs the sample_rate to charge DP-SGD steps")
        validate_for_dp(model)
        from opacus import GradSampleModule

        if per_sample not in ("fused", "opacus"):
            raise ConfigError(f"per_sample must be 'fused' or 'opacus', got {per_sample!r}")
        self.per_sample = per_sample
        self.clipper: PerSampleClipper | None = None
        if per_sample == "fused":
            self.clipper = PerSampleClipper(model)
            self.module = model
        elif isinstance(model, GradSampleModule):
            self.module = model
        else:
            self.module = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        model_ids = {id(p) for p in self.params}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in model_ids:
                    raise ConfigError("the optimizer holds parameters outside the model")
        self.optimizer = optimizer
        self.max_grad_norm = float(max_grad_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.expected_batch_size = float(expected_batch_size)
        self.noise_multiplicity = int(noise_multiplicity)
        self.secure_noise = bool(secure_noise)
        self.source = source
        self.ledger = ledger
        self.sample_rate = sample_rate
        self.artefact = artefact
        self.input_data = input_data  # "noised": trains on PFDM's x~ only (DPSGDEvent.input)
        # The noise does not depend on the data: a worker thread draws it while the
        # forward and backward passes run (ChaCha20 + Box-Muller, ~11 ms for the
        # default UNet's 480k parameters, docs/performance.md). The same stream in
        # the same order: the values are those of drawing it afterwards.
        self.prefetch_noise = bool(prefetch_noise)
        self.reserved_steps = 0

    def close(self) -> None:
        """Remove the hooks this DPSGD put on the model."""
        if self.clipper is not None:
            self.clipper.close()
        elif self.per_sample == "opacus":  # Opacus' GradSampleModule
            self.module._close()

    def reserve(self, steps: int) -> float:
        """Charge `steps` DP-SGD steps to the ledger before running them;
        returns the artefact's epsilon. BudgetExceededError leaves nothing reserved."""
        if self.ledger is None:
            raise PrivacyError("this DPSGD has no ledger to charge")
        if self.noise_multiplier == 0.0:
            raise PrivacyError("noise_multiplier 0 gives no privacy; nothing to charge")
        eps = self.ledger.charge(
            DPSGDEvent(
                noise_multiplier=self.noise_multiplier,
                sample_rate=float(self.sample_rate),  # type: ignore[arg-type]
                steps=steps,
                artefact=self.artefact,
                input=self.input_data,
            )
        )
        self.reserved_steps += steps
        return eps

    def _noise(self, shape: tuple[int, ...], *, dtype: torch.dtype, device) -> torch.Tensor:
        """Standard normal noise. `secure_noise` is Opacus' secure_mode recipe against
        floating-point attacks on the Gaussian (Holohan & Braghin 2021; Haney et al.
        2022): the sum of 4 draws halved, same distribution, 4x the draws. Our draws
        already come from an OS-keyed ChaCha20 stream, the other half of secure_mode."""
        if not self.secure_noise:
            return self.source.normal(shape, dtype=dtype, device=device)
        total = self.source.normal(shape, dtype=torch.float64, device=device)
        for _ in range(3):
            total = total + self.source.normal(shape, dtype=torch.float64, device=device)
        return (total / 2).to(dtype)

    def _standard_noise(self) -> list[torch.Tensor]:
        return [self._noise(tuple(p.shape), dtype=p.dtype, device=p.device) for p in self.params]

    def step(self, per_copy_loss_fn: PerCopyLoss, *batch: torch.Tensor) -> torch.Tensor:
        """One DP-SGD step on a Poisson batch of B samples (B may be 0).

        `per_copy_loss_fn(module, *batch_repeated)` gets each tensor repeated
        K times along dim 0 (`repeat_interleave`, copies of sample i contiguous)
        and returns the B*K per-copy losses. Returns the B per-sample gradient
        norms before clipping: raw data-dependent values, for local debugging
        and tests only; never log them into a released artefact.
        """
        if self.ledger is not None and self.reserved_steps < 1:
            raise PrivacyError("no reserved DP-SGD steps left; call reserve() first")
        if not batch:
            raise ConfigError("step needs at least one batch tensor")
        b = int(batch[0].shape[0])
        if any(int(t.shape[0]) != b for t in batch):
            raise ConfigError("all batch tensors must share dim 0")
        k = self.noise_multiplicity
        noisy = self.noise_multiplier > 0.0
        pending: Future | None = (_noise_pool().submit(self._standard_noise)
                                  if noisy and self.prefetch_noise else None)
        try:
            summed, norms = self._clipped_sum(per_copy_loss_fn, batch, b, k)
        finally:
            # Never leave a draw from this DPSGD's stream running behind the caller.
            noise = pending.result() if pending is not None else None
        if noisy and noise is None:
            noise = self._standard_noise()
        std = self.noise_multiplier * self.max_grad_norm
        for i, (p, g) in enumerate(zip(self.params, summed, strict=True)):
            if noisy:
                g = g + std * noise[i]
            p.grad = g / self.expected_batch_size
        self.optimizer.step()
        if self.ledger is not None:
            self.reserved_steps -= 1
        return norms

    def _clipped_sum(
        self, loss_fn: PerCopyLoss, batch: tuple[torch.Tensor, ...], b: int, k: int
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if b == 0:
            zeros = [torch.zeros_like(p) for p in self.params]
            return zeros, torch.zeros(0)
        self.module.zero_grad(set_to_none=True)
        repeated = [t.repeat_interleave(k, dim=0) for t in batch]
        if self.clipper is not None:
            return self.clipper.clipped_sum(loss_fn, tuple(repeated), b, k, self.max_grad_norm, _CLIP_STABILITY)
        losses = loss_fn(self.module, *repeated)
        if losses.shape != (b * k,):
            raise ConfigError(
                f"per_copy_loss_fn must return shape ({b * k},), got {tuple(losses.shape)}"
            )
        with warnings.catch_warnings():
            # Opacus' hooks fire on module outputs when inputs need no grad: expected here.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            losses.sum().backward()
        per_sample = []
        for p in self.params:
            gs = getattr(p, "grad_sample", None)
            if gs is None:  # parameter unused by this batch
                per_sample.append(torch.zeros((b, *p.shape), dtype=p.dtype, device=p.device))
                continue
            if not isinstance(gs, torch.Tensor) or gs.shape[0] != b * k:
                raise PrivacyError("per-sample gradients accumulated over several backward passes")
            per_sample.append(gs.reshape(b, k, *p.shape).mean(dim=1))
        self.module.zero_grad(set_to_none=True)
        norms = torch.sqrt(sum(g.reshape(b, -1).pow(2).sum(dim=1) for g in per_sample))
        if not bool(torch.isfinite(norms).all()):
            raise PrivacyError("a per-sample gradient is not finite; refusing to release it")
        factor = (self.max_grad_norm / (norms + _CLIP_STABILITY)).clamp(max=1.0)
        summed = [torch.einsum("b,b...->...", factor, g) for g in per_sample]
        return summed, norms.detach()
