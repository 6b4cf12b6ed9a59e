"""Distributed DP-SGD at the record level, through secure aggregation.

One step: every client Poisson-samples its own member records at the common
rate q, clips each record's gradient (the mean of its K noise-multiplicity
copies) to C, sums them, and hands `encode_share` the sum: scaled to integers,
rounded, plus the client's Skellam noise share, reduced into Z_(2^b). secagg adds the shares;
the aggregator only ever sees masked vectors and the noisy integer sum, which
`decode_sum` turns back into the noisy sum of clipped gradients over all
clients' sampled records, exactly as if one trusted party had run DP-SGD on
the union with one dose of noise. The server divides by the expected batch
q * N (N = all members of all clients) and takes an Adam step: post-processing.

With `federation.hybrid_forward` each client has also released PFDM's x~ (its
records noised once at t0; ForwardNoiseEvent). A step's share is then the sum
of two parts: the raw records' clipped gradients for t <= t0 (Poisson sample
at q), and the clipped gradients on x~ for t > t0 of an INDEPENDENT Poisson
sample of x~. Given x~, the second part is a fixed shift chosen without the raw
data, so the step is the same Skellam mechanism on the raw records (sensitivity
C, add/remove) and adaptive composition with the forward noise covers both; the
ledger composes them under replace-one, the Skellam steps analysed directly
under it (privacy/replace_one.py), and the noise is calibrated on that. Both
parts count toward the modulus: the wrap bound is planned for twice the batch.

Accounting is over the union of records: one record of one client is in a
step's sum with probability q, and the sum's noise is the survivors' shares.
Every client adds noise for `min_survivors` contributors; secagg's
`min_contributors` makes honest clients refuse to unmask a sum with fewer, so
the noise floor holds even against the aggregator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from securediff.diffusion.loss import diffusion_loss
from securediff.diffusion.schedule import NoiseSchedule
from securediff.errors import ConfigError
from securediff.privacy.accountants import compose_epsilon
from securediff.privacy.dpsgd import poisson_sample, validate_for_dp
from securediff.privacy.ledger import DistributedSkellamEvent
from securediff.privacy.per_sample import PerSampleClipper
from securediff.privacy.skellam import SkellamPlan, decode_sum, encode_share, plan_skellam
from securediff.privacy.skellam_accounting import calibrate_skellam_noise

__all__ = ["ClientGradients", "DistributedPlan", "NoisedPart", "apply_noisy_sum", "client_share",
           "decode_sum", "plan_distributed", "skellam_event"]

_CLIP_STABILITY = 1e-6


@dataclass(frozen=True)
class DistributedPlan:
    """Fixed before training: the mechanism and the sampling it is accounted with."""

    skellam: SkellamPlan
    sample_rate: float  # q, the same for every record of every client
    steps_per_round: int
    total_members: int  # N: the expected batch is q * N

    @property
    def expected_batch(self) -> float:
        return self.sample_rate * self.total_members


def min_survivors_for(requested: int, num_clients: int) -> int:
    """The planned noise floor: `requested`, or 0 for 80% of the clients (secagg's
    default dropout tolerance), and never more than all of them."""
    if requested < 0:
        raise ConfigError(f"privacy.ddp_min_survivors must be >= 0, got {requested}")
    floor = requested or math.ceil(0.8 * num_clients)
    if floor > num_clients:
        raise ConfigError(f"privacy.ddp_min_survivors = {floor} exceeds the {num_clients} clients")
    return max(1, floor)


def plan_distributed(cfg, *, sizes: list[int], dim: int, prior_events=()) -> DistributedPlan:
    """The plan of a hybrid run: q from the expected total batch (training.batch_size,
    over all clients), the noise multiplier calibrated so that all planned steps at
    the noise floor meet privacy.target_epsilon, and the Skellam encoding for it.
    `prior_events`: what a client releases besides the steps (hybrid_forward: the
    forward noise); the steps are calibrated so that all of it composes to the target."""
    total = int(sum(sizes))
    if total < 1:
        raise ConfigError("distributed DP-SGD needs at least one member record")
    q = min(1.0, cfg.training.batch_size / total)
    steps = cfg.federation.local_steps * cfg.federation.rounds
    floor = min_survivors_for(cfg.privacy.ddp_min_survivors, len(sizes))
    parts = 2 if cfg.federation.hybrid_forward else 1  # raw and x~ records both in the sum

    def build(noise_multiplier: float) -> SkellamPlan:
        return plan_skellam(dim=dim, l2_clip=cfg.privacy.max_grad_norm, noise_multiplier=noise_multiplier,
                            min_survivors=floor, max_clients=len(sizes), expected_batch=parts * q * total)

    composed = None
    if prior_events:
        prior = list(prior_events)
        alone = compose_epsilon(prior, delta=cfg.privacy.delta, accountant="rdp")
        if alone >= cfg.privacy.target_epsilon:
            raise ConfigError(
                f"the forward noise at privacy.t0 = {cfg.privacy.t0} alone costs epsilon {alone:.3f} "
                f">= privacy.target_epsilon = {cfg.privacy.target_epsilon}; raise privacy.t0")

        def composed(plan: SkellamPlan) -> float:
            event = _steps_event(plan, survivors=floor, sample_rate=q, steps=steps, artefact="shared")
            return compose_epsilon([*prior, event], delta=cfg.privacy.delta, accountant="rdp")

    z = calibrate_skellam_noise(build, target_epsilon=cfg.privacy.target_epsilon, sample_rate=q,
                                steps=steps, delta=cfg.privacy.delta, epsilon=composed)
    return DistributedPlan(skellam=build(z), sample_rate=q, steps_per_round=cfg.federation.local_steps,
                           total_members=total)


def skellam_event(plan: DistributedPlan, *, survivors: int, steps: int,
                  artefact: str = "shared") -> DistributedSkellamEvent:
    """The ledger event of `steps` steps whose sums held `survivors` noise shares."""
    return _steps_event(plan.skellam, survivors=survivors, sample_rate=plan.sample_rate, steps=steps,
                        artefact=artefact)


def _steps_event(sk: SkellamPlan, *, survivors: int, sample_rate: float, steps: int,
                 artefact: str) -> DistributedSkellamEvent:
    return DistributedSkellamEvent(
        l1_sensitivity=sk.l1_sensitivity, l2_sensitivity=sk.l2_sensitivity,
        noise_variance=survivors * sk.share_variance, sample_rate=sample_rate, steps=steps,
        artefact=artefact, scale=sk.scale, min_survivors=sk.min_survivors)


class ClientGradients:
    """A client's working copy of the shared model with per-sample hooks, reloaded
    with the current shared weights before every step."""

    def __init__(self, template: nn.Module) -> None:
        import copy

        self.model = copy.deepcopy(template)
        validate_for_dp(self.model)
        self.clipper = PerSampleClipper(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def close(self) -> None:
        self.clipper.close()

    def load(self, shared: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for mine, theirs in zip(self.params, shared, strict=True):
                mine.copy_(theirs)

    def clipped_sum(
        self, x: torch.Tensor, y: torch.Tensor, *, clip: float, multiplicity: int,
        schedule: NoiseSchedule, generator: torch.Generator, null_label: int, label_dropout: float,
        start: int = 0, end: int | None = None,
    ) -> np.ndarray:
        """Sum over the batch of each record's clipped gradient, flat, float64, for the
        diffusion loss on timesteps (start, end] (start > 0: x holds x_start, as PFDM's x~)."""
        end = schedule.T if end is None else end
        b = int(x.shape[0])
        if b == 0:
            return np.zeros(sum(p.numel() for p in self.params), dtype=np.float64)
        self.model.train()

        def per_copy_loss(module: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return diffusion_loss(module, xb, yb, schedule=schedule, start=start, end=end,
                                  generator=generator, null_label=null_label, label_dropout=label_dropout)

        k = multiplicity
        batch = (x.repeat_interleave(k, dim=0), y.repeat_interleave(k, dim=0))
        sums, _norms = self.clipper.clipped_sum(per_copy_loss, batch, b, k, clip, _CLIP_STABILITY)
        return torch.cat([s.reshape(-1) for s in sums]).double().cpu().numpy()


@dataclass(frozen=True)
class NoisedPart:
    """hybrid_forward: a client's x~ (noised once at t0) and the randomness of its part."""

    x: torch.Tensor
    y: torch.Tensor
    t0: int
    sampling_source: object
    generator: torch.Generator


def client_share(
    grads: ClientGradients, plan: DistributedPlan, *, x: torch.Tensor, y: torch.Tensor, clip: float,
    multiplicity: int, schedule: NoiseSchedule, null_label: int, label_dropout: float,
    sampling_source, noise_source, generator: torch.Generator, noised: NoisedPart | None = None,
) -> np.ndarray:
    """What one client sends into secagg for one step: its noisy integer share."""
    common = dict(clip=clip, multiplicity=multiplicity, schedule=schedule, null_label=null_label,
                  label_dropout=label_dropout)
    idx = torch.from_numpy(poisson_sample(int(x.shape[0]), sample_rate=plan.sample_rate,
                                          source=sampling_source)).to(x.device)
    if noised is None:
        summed = grads.clipped_sum(x[idx], y[idx], generator=generator, **common)
    else:
        summed = grads.clipped_sum(x[idx], y[idx], generator=generator, end=noised.t0, **common)
        # An independent sample of x~: the shift it adds is a function of x~ alone.
        jdx = torch.from_numpy(poisson_sample(int(noised.x.shape[0]), sample_rate=plan.sample_rate,
                                              source=noised.sampling_source)).to(x.device)
        summed += grads.clipped_sum(noised.x[jdx], noised.y[jdx], generator=noised.generator,
                                    start=noised.t0, **common)
    return encode_share(summed, plan.skellam, noise_source)


def apply_noisy_sum(model: nn.Module, optimizer: torch.optim.Optimizer, noisy_sum: np.ndarray,
                    expected_batch: float) -> None:
    """The server's step: gradient = noisy sum / (q N), then the optimizer."""
    params = [p for p in model.parameters() if p.requires_grad]
    grad = torch.from_numpy(noisy_sum / expected_batch)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = grad[offset:offset + n].view_as(p).to(dtype=p.dtype, device=p.device)
        offset += n
    if offset != grad.numel():
        raise ConfigError(f"the aggregate has {grad.numel()} coordinates, the model {offset}")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
