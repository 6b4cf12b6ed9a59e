"""The forward-noise mechanism of PFDM (Patel et al., arXiv 2504.00952).

Each image is clipped to L2 norm C and noised once to step t0:
x~ = sqrt(abar_t0) clip(x, C) + sqrt(1 - abar_t0) z. Dividing by sqrt(abar_t0)
shows a Gaussian mechanism on clip(x) with sigma^2 = (1 - abar_t0) / abar_t0,
sensitivity 2C under replace-one. The shared denoiser sees only x~ and its
continuation to t > t0, so everything it releases is post-processing of x~.

Timesteps run t = 1..T; an `abar` array has length T + 1 with abar[0] = 1.0
and abar[t] = prod_{s<=t} (1 - beta_s). `linear_alphas_cumprod` is the
accounting reference (the paper's schedule); the diffusion module owns the
schedules used for training and passes arrays with the same indexing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from securediff.errors import ConfigError
from securediff.privacy.accountants import gaussian_epsilon
from securediff.privacy.ledger import ForwardNoiseEvent, PrivacyLedger
from securediff.rng import RandomSource

METHODS: tuple[str, ...] = ("exact", "classic")


def linear_alphas_cumprod(
    *, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> np.ndarray:
    """abar[0..T] in float64 for beta_t = linspace(beta_start, beta_end, T)[t-1]."""
    if isinstance(T, bool) or int(T) != T or T < 1:
        raise ConfigError(f"T must be a positive integer, got {T!r}")
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ConfigError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    betas = np.linspace(beta_start, beta_end, int(T), dtype=np.float64)
    return np.concatenate([[1.0], np.cumprod(1.0 - betas)])


def check_abar(abar: Any) -> np.ndarray:
    """Validate an abar array (abar[0] = 1, then non-increasing in (0, 1))."""
    if isinstance(abar, torch.Tensor):
        abar = abar.detach().cpu().numpy()
    arr = np.asarray(abar, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ConfigError("abar must be a 1-D array of length T + 1 >= 2")
    if arr[0] != 1.0:
        raise ConfigError(f"abar[0] must be 1.0 (index t holds abar_t), got {arr[0]}")
    rest = arr[1:]
    if not (np.all(rest > 0.0) and np.all(rest < 1.0) and np.all(np.diff(arr) <= 0.0)):
        raise ConfigError("abar[1:] must lie in (0, 1) and be non-increasing")
    return arr


def _check_t0(t0: int, abar: np.ndarray) -> int:
    T = abar.size - 1
    if isinstance(t0, bool) or int(t0) != t0 or not 1 <= t0 <= T:
        raise ConfigError(f"t0 must be an integer in 1..{T}, got {t0!r}")
    return int(t0)


def forward_sigma(abar_t0: float) -> float:
    """Noise std relative to the clipped image: sqrt((1 - abar_t0) / abar_t0)."""
    a = float(abar_t0)
    if not 0.0 < a < 1.0:
        raise ConfigError(f"abar_t0 must be in (0, 1), got {a}")
    return math.sqrt((1.0 - a) / a)


def _check(sigma: float, clip_norm: float, delta: float) -> None:
    if not sigma > 0.0:
        raise ConfigError(f"sigma must be positive, got {sigma}")
    if not (clip_norm > 0.0 and math.isfinite(clip_norm)):
        raise ConfigError(f"clip_norm must be positive and finite, got {clip_norm}")
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")


def epsilon_classic(*, sigma: float, clip_norm: float, delta: float) -> float:
    """The paper's bound: 2C^2/sigma^2 + C sqrt(8 ln(1/delta) / sigma^2)."""
    _check(sigma, clip_norm, delta)
    c, s2 = clip_norm, sigma * sigma
    return 2.0 * c * c / s2 + c * math.sqrt(8.0 * math.log(1.0 / delta) / s2)


def epsilon_exact(*, sigma: float, clip_norm: float, delta: float) -> float:
    """The analytic Gaussian mechanism (Balle & Wang 2018), sensitivity 2C."""
    _check(sigma, clip_norm, delta)
    return gaussian_epsilon(mu=2.0 * clip_norm / sigma, delta=delta)


def forward_epsilon(
    *, sigma: float, clip_norm: float, delta: float, method: str = "exact"
) -> float:
    if method == "exact":
        return epsilon_exact(sigma=sigma, clip_norm=clip_norm, delta=delta)
    if method == "classic":
        return epsilon_classic(sigma=sigma, clip_norm=clip_norm, delta=delta)
    raise ConfigError(f"unknown method {method!r}; expected one of {METHODS}")


def calibrate_t0(
    *, target_epsilon: float, clip_norm: float, delta: float, abar: Any, method: str = "exact"
) -> int:
    """The smallest t0 whose epsilon is <= target (epsilon falls as t0 grows)."""
    arr = check_abar(abar)
    T = arr.size - 1

    def eps(t0: int) -> float:
        return forward_epsilon(
            sigma=forward_sigma(arr[t0]), clip_norm=clip_norm, delta=delta, method=method
        )

    if not target_epsilon > 0.0:
        raise ConfigError(f"target_epsilon must be positive, got {target_epsilon}")
    if eps(T) > target_epsilon:
        raise ConfigError(
            f"no t0 in 1..{T} reaches epsilon {target_epsilon} "
            f"(best {eps(T):.4g} at t0={T}); lower the clip norm or raise the target"
        )
    lo, hi = 0, T  # eps(hi) <= target; lo is 0 or fails it
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if eps(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi


def calibrate_clip(
    *, target_epsilon: float, t0: int, delta: float, abar: Any, method: str = "exact"
) -> float:
    """The largest clip norm (to 1e-9 relative) with epsilon <= target at t0."""
    arr = check_abar(abar)
    sigma = forward_sigma(arr[_check_t0(t0, arr)])
    if not (target_epsilon > 0.0 and math.isfinite(target_epsilon)):
        raise ConfigError(f"target_epsilon must be positive and finite, got {target_epsilon}")

    def ok(c: float) -> bool:
        return forward_epsilon(sigma=sigma, clip_norm=c, delta=delta, method=method) <= (
            target_epsilon
        )

    lo, hi = 0.0, sigma  # epsilon depends on C / sigma only
    while ok(hi):
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-9 * hi:
        mid = 0.5 * (lo + hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    if lo == 0.0:
        raise ConfigError(f"no clip norm reaches epsilon {target_epsilon} at t0={t0}")
    return lo


def clip_per_image(x: torch.Tensor, *, clip_norm: float) -> torch.Tensor:
    """Scale each image (dim 0 indexes images) to L2 norm at most `clip_norm`."""
    flat = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    norms = flat.norm(dim=1)
    factor = torch.where(norms > clip_norm, clip_norm / norms, torch.ones_like(norms))
    return (flat * factor[:, None]).reshape(x.shape)


def noise_once(
    x: torch.Tensor,
    *,
    clip_norm: float,
    t0: int,
    abar: Any,
    source: RandomSource,
    ledger: PrivacyLedger,
    data_id: str,
) -> torch.Tensor:
    """x~ = sqrt(abar_t0) clip(x, C) + sqrt(1 - abar_t0) z, once per data set.

    The ledger is charged first: it refuses a second forward noising of the
    same `data_id` (PrivacyError) and a charge past the budget, and nothing is
    drawn then. `z` comes from `source`, which must be private outside tests.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ConfigError("x must be a floating tensor of shape (N, ...)")
    arr = check_abar(abar)
    t0 = _check_t0(t0, arr)
    a = float(arr[t0])
    sigma = forward_sigma(a)
    if not (clip_norm > 0.0 and math.isfinite(clip_norm)):
        raise ConfigError(f"clip_norm must be positive and finite, got {clip_norm}")
    ledger.charge(ForwardNoiseEvent(sigma=sigma, clip_norm=clip_norm, t0=t0, data_id=data_id))
    clipped = clip_per_image(x, clip_norm=clip_norm)
    z = source.normal(tuple(x.shape), dtype=torch.float64)
    out = math.sqrt(a) * clipped + math.sqrt(1.0 - a) * z
    return out.to(dtype=x.dtype, device=x.device)


def continue_forward(
    x_tilde: torch.Tensor, *, t: int | torch.Tensor, abar: Any, t0: int, noise: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(abar_t / abar_t0) x~ + sqrt(1 - abar_t / abar_t0) z for t > t0.

    The shared denoiser's inputs are made this way, from x~ only, never from
    the clean x. `t` is an int or a per-sample LongTensor of shape (N,).
    """
    arr = check_abar(abar)
    t0 = _check_t0(t0, arr)
    if noise.shape != x_tilde.shape:
        raise ConfigError(f"noise shape {tuple(noise.shape)} != x_tilde {tuple(x_tilde.shape)}")
    n = x_tilde.shape[0]
    tt = torch.as_tensor(t, dtype=torch.long).detach().cpu()
    if tt.dim() == 0:
        tt = tt.expand(n)
    if tt.shape != (n,):
        raise ConfigError(f"t must be an int or a tensor of shape ({n},), got {tuple(tt.shape)}")
    T = arr.size - 1
    if n and (int(tt.min()) <= t0 or int(tt.max()) > T):
        raise ConfigError(f"every t must lie in ({t0}, {T}] (the shared model's range)")
    ratio = torch.from_numpy(arr)[tt] / arr[t0]
    shape = (n,) + (1,) * (x_tilde.dim() - 1)
    keep = ratio.sqrt().reshape(shape).to(dtype=x_tilde.dtype, device=x_tilde.device)
    add = (1.0 - ratio).sqrt().reshape(shape).to(dtype=x_tilde.dtype, device=x_tilde.device)
    return keep * x_tilde + add * noise
