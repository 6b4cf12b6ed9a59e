"""LiRA (Carlini et al., S&P 2022), offline and online, for denoisers.

Shadow models are trained by the project's own pipeline (a `ShadowTrainer`:
records -> a trained segment) on random halves of the audited population, so
that every record is IN for exactly half of the shadows and OUT for the rest.
A record's observation is the log of its denoising loss at one timestep
(chosen on the reference split with the target model) under a few fixed noise
draws, the same for the target and every shadow. Gaussians with one variance
shared across records (their "fixed variance", which suits few shadows) are
fitted to the IN and OUT observations of each record:

- online: log N(obs; mu_in, s_in) - log N(obs; mu_out, s_out);
- offline (OUT shadows only): (mu_out - obs) / s_out, the one-sided test.

Both average over the noise draws.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from audits.attacks.base import AttackScores, AuditSplit, cut
from audits.attacks.loss import choose_timestep
from audits.attacks.target import Records, Target, fixed_noise
from securediff.errors import ConfigError

ShadowTrainer = Callable[[Records, torch.Generator], Target]


def observe(target: Target, records: Records, *, t: int, noise: torch.Tensor) -> np.ndarray:
    """log ||eps_theta(x_t, t) - z||^2 per noise draw: shape (draws, N)."""
    x0 = target.data_point(records.x)
    out = []
    for z in noise:
        pred = target.eps(target.noised(x0, t, z), t, records.y)
        out.append(torch.log((pred - z).pow(2).flatten(1).mean(1).double() + 1e-12).numpy())
    return np.stack(out)


def balanced_membership(*, shadows: int, records: int, rng: np.random.Generator) -> np.ndarray:
    """(shadows, records) booleans; each record is IN for exactly shadows / 2 shadows."""
    if shadows < 2 or shadows % 2:
        raise ConfigError(f"LiRA needs an even number of shadow models >= 2, got {shadows}")
    return np.argsort(rng.uniform(size=(shadows, records)), axis=0) < shadows // 2


def _fit(obs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-record, per-draw means over the masked shadows and one pooled std."""
    w = mask[:, None, :].astype(np.float64)
    count = w.sum(0)
    mean = (obs * w).sum(0) / np.maximum(count, 1.0)
    resid = ((obs - mean[None]) ** 2 * w).sum()
    dof = max(float(w.sum() - np.count_nonzero(count)), 1.0)
    return mean, float(np.sqrt(resid / dof)) + 1e-6


def lira_scores(target_obs: np.ndarray, shadow_obs: np.ndarray, *, keep: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """(offline, online) scores from observations of the target (draws, N) and of
    the shadows (S, draws, N) with their membership `keep` (S, N)."""
    mu_out, s_out = _fit(shadow_obs, ~keep)
    mu_in, s_in = _fit(shadow_obs, keep)
    offline = ((mu_out - target_obs) / s_out).mean(0)

    def logpdf(x: np.ndarray, mu: np.ndarray, s: float) -> np.ndarray:
        return -0.5 * ((x - mu) / s) ** 2 - np.log(s)

    online = (logpdf(target_obs, mu_in, s_in) - logpdf(target_obs, mu_out, s_out)).mean(0)
    return offline, online


def lira_attack(
    target: Target, split: AuditSplit, *, train_shadow: ShadowTrainer, shadows: int = 4,
    draws: int = 4, generator: torch.Generator, rng: np.random.Generator, t: int | None = None,
) -> tuple[AttackScores, AttackScores]:
    """Train the shadows, then score; returns (offline, online)."""
    records, _ = split.population()
    keep = balanced_membership(shadows=shadows, records=len(records), rng=rng)
    noise = fixed_noise(tuple(records.x.shape), draws=draws, generator=generator)
    if t is None:
        t, _ = choose_timestep(target, split, noise=noise)
    target_obs = observe(target, records, t=t, noise=noise)
    shadow_obs = np.stack([
        observe(train_shadow(records.take(np.flatnonzero(keep[s])), generator), records, t=t,
                noise=noise)
        for s in range(shadows)
    ])
    offline, online = lira_scores(target_obs, shadow_obs, keep=keep)
    details = {"timestep": t, "shadows": shadows, "draws": draws}
    return (cut(attack="lira-offline", target=target.name, split=split, values=offline,
                details=details),
            cut(attack="lira-online", target=target.name, split=split, values=online,
                details=details))
