"""DP-SGD step time against a plain step, measured side by side in one process.

The default UNet (securediff.config defaults) on 8x8 digits-shaped input; a
plain Adam step on the K-times repeated batch against securediff's DPSGD step
(clipping, noise from the injected stream, noise multiplicity K) for each way
of getting per-sample gradients:

- fused: securediff.privacy.per_sample (the default);
- opacus-hooks: Opacus' GradSampleModule, hooks mode;
- opacus-functorch: the same with force_functorch=True.

Opacus' ghost mode returns norms only and needs Opacus' own optimizer and
noise, and `ew` fails on nn.Embedding (FACTS.md): neither fits DPSGD.
Measurements alternate plain and DP steps so load on this shared machine hits
both alike; the figure is the ratio of medians. Peak memory: each
configuration runs again in a child process that does only those steps, and
reports its peak RSS above its RSS before the steps (Linux: the high-water
mark is reset first).

    .venv/bin/python benchmarks/dpsgd_step.py                 # all modes, B 64 and 256, K 1 and 4
    .venv/bin/python benchmarks/dpsgd_step.py --modes fused --batch 256 --multiplicity 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from opacus import GradSampleModule

from securediff.config import Config
from securediff.diffusion.loss import diffusion_loss
from securediff.diffusion.schedule import make_schedule
from securediff.models import UNet, UNetSpec
from securediff.privacy.dpsgd import DPSGD
from securediff.rng import RandomSource

MODES = ("fused", "opacus-hooks", "opacus-functorch")


def make_steps(mode: str, *, batch: int, k: int, seed: int = 0, prefetch_noise: bool = True):
    """Closures for one plain step and one DP-SGD step on fixed batches."""
    cfg = Config().model
    spec = UNetSpec(base_channels=cfg.base_channels, channel_mults=cfg.channel_mults)
    schedule = make_schedule("linear", T=1000)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    plain_model = UNet(spec)
    plain_opt = torch.optim.Adam(plain_model.parameters(), 1e-3)
    dp_model = UNet(spec)
    opt = torch.optim.Adam(dp_model.parameters(), 1e-3)
    if mode == "fused":
        wrapped, per_sample = dp_model, "fused"
    else:
        wrapped = GradSampleModule(dp_model, batch_first=True, loss_reduction="sum",
                                   force_functorch=mode == "opacus-functorch")
        per_sample = "opacus"
    dp = DPSGD(model=wrapped, optimizer=opt, max_grad_norm=1.0, noise_multiplier=1.0,
               expected_batch_size=batch, source=RandomSource.insecure_from_seed(seed), ledger=None,
               noise_multiplicity=k, per_sample=per_sample, prefetch_noise=prefetch_noise)

    def loss_fn(model, xb, yb):
        return diffusion_loss(model, xb, yb, schedule=schedule, start=0, end=1000, generator=gen)

    def plain_step() -> None:
        loss = loss_fn(plain_model, x.repeat_interleave(k, 0), y.repeat_interleave(k, 0)).mean()
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    def dp_step() -> None:
        dp.step(loss_fn, x, y)

    return plain_step, dp_step, sum(q.numel() for q in plain_model.parameters())


def measure(mode: str, *, batch: int, k: int, reps: int) -> dict:
    plain_step, dp_step, params = make_steps(mode, batch=batch, k=k)
    times: dict[str, list[float]] = {"plain": [], "dpsgd": []}
    for i in range(reps + 2):
        for name, fn in (("plain", plain_step), ("dpsgd", dp_step)):
            t = time.perf_counter()
            fn()
            if i >= 2:  # warm-up
                times[name].append(time.perf_counter() - t)
    p, d = statistics.median(times["plain"]), statistics.median(times["dpsgd"])
    return {"mode": mode, "batch": batch, "noise_multiplicity": k, "ratio": d / p, "plain_s": p,
            "dpsgd_s": d, "params": params}


def _status_kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith(key + ":")))


def step_peak_mib(step, reps: int = 3) -> float:
    """Peak RSS of `reps` calls of `step` above the RSS before them. The kernel's
    high-water mark is reset first (clear_refs 5): ru_maxrss alone would keep
    the peak of the imports and set-up, which hid the steps' own (read as 0)."""
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    for _ in range(reps):
        step()
    return (_status_kib("VmHWM") - base) / 1024


def peak_rss_mib(mode: str, which: str, *, batch: int, k: int) -> float:
    """Peak RSS of a child that runs only `which` steps, above its RSS before them."""
    code = (
        "import sys, torch; sys.path.insert(0, {!r}); import dpsgd_step as b; torch.set_num_threads(2);"
        "plain, dp, _ = b.make_steps({!r}, batch={}, k={}); print(b.step_peak_mib({}))"
    ).format(str(Path(__file__).parent), mode, batch, k, "plain" if which == "plain" else "dp")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--multiplicity", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dpsgd_step.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for batch in args.batch:
        for k in args.multiplicity:
            for mode in args.modes:
                row = measure(mode, batch=batch, k=k, reps=args.reps)
                if not args.no_memory:
                    row["plain_peak_mib"] = peak_rss_mib(mode, "plain", batch=batch, k=k)
                    row["dpsgd_peak_mib"] = peak_rss_mib(mode, "dp", batch=batch, k=k)
                rows.append(row)
                memory = (f"  peak {row['plain_peak_mib']:6.0f} / {row['dpsgd_peak_mib']:6.0f} MiB"
                          if "dpsgd_peak_mib" in row else "")
                print(f"B={batch:4d} K={k} {mode:17s}: plain {row['plain_s'] * 1e3:7.1f} ms  "
                      f"dpsgd {row['dpsgd_s'] * 1e3:7.1f} ms  ratio {row['ratio']:5.2f}{memory}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "dpsgd_step", "when": datetime.now().isoformat(timespec="seconds"),
        "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "torch_threads": 2,
        "maxrss_mib_parent": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rows": rows,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
