"""DP-SGD step time against a plain step, measured side by side in one process.

The default UNet (securediff.config defaults) on 8x8 digits-shaped input;
plain Adam step vs securediff's DPSGD step (Opacus hooks for per-sample
gradients, joint clipping, ChaCha20 noise), with noise multiplicity K. The
measurements alternate so that load on this shared machine hits both alike;
the figure reported is the ratio of medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from securediff.config import Config
from securediff.diffusion.loss import diffusion_loss
from securediff.diffusion.schedule import make_schedule
from securediff.models import UNet, UNetSpec
from securediff.privacy.dpsgd import DPSGD
from securediff.rng import RandomSource


def measure(*, spec: UNetSpec, schedule, gen: torch.Generator, source: RandomSource, batch: int, k: int,
            reps: int) -> dict:
    """Median seconds of a plain step on the K-times repeated batch and of a DP-SGD
    step with noise multiplicity K, alternating the two."""
    x = torch.randn(batch, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    plain_model = UNet(spec)
    plain_opt = torch.optim.Adam(plain_model.parameters(), 1e-3)
    dp_model = UNet(spec)
    dp = DPSGD(model=dp_model, optimizer=torch.optim.Adam(dp_model.parameters(), 1e-3), max_grad_norm=1.0,
               noise_multiplier=1.0, expected_batch_size=batch, source=source, ledger=None, noise_multiplicity=k)

    def loss_fn(model, xb, yb):
        return diffusion_loss(model, xb, yb, schedule=schedule, start=0, end=1000, generator=gen)

    def plain_step() -> None:
        loss = loss_fn(plain_model, x.repeat_interleave(k, 0), y.repeat_interleave(k, 0)).mean()
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    def dp_step() -> None:
        dp.step(loss_fn, x, y)

    times: dict[str, list[float]] = {"plain": [], "dpsgd": []}
    for i in range(reps + 2):
        for name, fn in (("plain", plain_step), ("dpsgd", dp_step)):
            t = time.perf_counter()
            fn()
            if i >= 2:  # warm-up
                times[name].append(time.perf_counter() - t)
    p, d = statistics.median(times["plain"]), statistics.median(times["dpsgd"])
    return {"batch": batch, "noise_multiplicity": k, "plain_s": p, "dpsgd_s": d, "ratio": d / p,
            "params": sum(q.numel() for q in plain_model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--multiplicity", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dpsgd_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = Config().model
    spec = UNetSpec(base_channels=cfg.base_channels, channel_mults=cfg.channel_mults)
    schedule = make_schedule("linear", T=1000)
    gen = torch.Generator().manual_seed(0)
    source = RandomSource.insecure_from_seed(0)
    rows = []
    for batch in args.batch:
        for k in args.multiplicity:
            row = measure(spec=spec, schedule=schedule, gen=gen, source=source, batch=batch, k=k, reps=args.reps)
            rows.append(row)
            print(f"B={batch:4d} K={k}: plain {row['plain_s'] * 1e3:7.1f} ms  dpsgd {row['dpsgd_s'] * 1e3:7.1f} ms  "
                  f"ratio {row['ratio']:5.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"mode": "hooks", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
