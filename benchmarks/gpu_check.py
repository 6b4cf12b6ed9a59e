"""Plain and DP-SGD training steps and DDIM sampling on a GPU, timed side by side.

Run through benchmarks/gpu_check.sh on a machine with CUDA (it sets up the
Python environment); `--device cpu --quick` exercises the same code here.

- training: the default UNet (securediff.config defaults) on 8x8 digits-shaped
  batches, a plain Adam step against securediff's DPSGD step (as
  benchmarks/dpsgd_step.py measures it on CPU), alternating, median of the
  repetitions, at batch 64 and 256 and noise multiplicity K in {1, 4};
- sampling: PFDM's split DDIM sampler (shared model from T to t0, personal
  model from t0 to 0) for a batch of labels, the default 100 DDIM steps.

Every CUDA timing waits for the device (`torch.cuda.synchronize`). Peak memory
is `torch.cuda.max_memory_allocated` per part on CUDA and the process's peak RSS
on CPU. The JSON goes to $OUT/gpu_check.json when OUT is set, else
benchmarks/results/gpu_check.json (or --out).

    benchmarks/gpu_check.sh                                   # on the GPU machine
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from securediff.config import Config
from securediff.diffusion.loss import diffusion_loss
from securediff.diffusion.sampling import SamplerSpec, Segment, sample_split
from securediff.diffusion.schedule import make_schedule
from securediff.models import UNet, UNetSpec
from securediff.privacy.dpsgd import DPSGD
from securediff.rng import RandomSource

NO_CUDA = 3  # exit status when CUDA was asked for and none is there


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _spec() -> UNetSpec:
    cfg = Config().model
    return UNetSpec(base_channels=cfg.base_channels, channel_mults=cfg.channel_mults,
                    attention=cfg.attention, groups=cfg.groups)


def train_steps(*, device: torch.device, batch: int, k: int, reps: int) -> dict:
    """Median seconds of a plain step on the K-times repeated batch and of a DP-SGD
    step with noise multiplicity K, alternating the two (two warm-up rounds)."""
    gen = torch.Generator().manual_seed(batch * 10 + k)  # benchmark data only
    schedule = make_schedule("linear", T=1000)
    x = torch.randn(batch, 1, 8, 8, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    plain_model = UNet(_spec()).to(device)
    plain_opt = torch.optim.Adam(plain_model.parameters(), 1e-3)
    dp_model = UNet(_spec()).to(device)
    dp = DPSGD(model=dp_model, optimizer=torch.optim.Adam(dp_model.parameters(), 1e-3),
               max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=batch,
               source=RandomSource.insecure_from_seed(0), ledger=None, noise_multiplicity=k)

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
    peaks: dict[str, float] = {}
    for i in range(reps + 2):
        for name, fn in (("plain", plain_step), ("dpsgd", dp_step)):
            _sync(device)
            _reset_peak(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            if i >= 2:
                times[name].append(time.perf_counter() - t)
                peaks[name] = max(peaks.get(name, 0.0), _peak_mib(device))
    dp.close()
    p, d = statistics.median(times["plain"]), statistics.median(times["dpsgd"])
    return {"what": "train_step", "device": device.type, "batch": batch, "noise_multiplicity": k,
            "ratio": d / p, "plain_s": p, "dpsgd_s": d, "peak_mib": peaks,
            "params": sum(q.numel() for q in plain_model.parameters())}


def ddim_sampling(*, device: torch.device, samples: int, steps: int, reps: int) -> dict:
    cfg = Config()
    schedule = make_schedule("linear", T=1000)
    t0 = 675  # the demo's hand-off step (README)
    shared, personal = UNet(_spec()).to(device), UNet(_spec()).to(device)
    segments = [Segment(model=shared, start=t0, end=schedule.T),
                Segment(model=personal, start=0, end=t0)]
    labels = torch.arange(samples) % 10
    spec = SamplerSpec(kind="ddim", steps=steps)
    times = []
    peak = 0.0
    for i in range(reps + 1):
        gen = torch.Generator().manual_seed(i)
        _sync(device)
        _reset_peak(device)
        t = time.perf_counter()
        out = sample_split(segments, labels, schedule=schedule, spec=spec, shape=(1, 8, 8),
                           generator=gen, null_label=_spec().null_label, device=device)
        _sync(device)
        if i >= 1:
            times.append(time.perf_counter() - t)
            peak = max(peak, _peak_mib(device))
    if not torch.isfinite(out).all():
        raise SystemExit("gpu_check: DDIM sampling produced non-finite values")
    return {"what": "ddim_sampling", "device": device.type, "samples": samples, "steps": steps,
            "seconds": statistics.median(times), "peak_mib": peak,
            "model_channels": cfg.model.base_channels}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code path")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, "
              f"torch.cuda.is_available() is False); nothing measured. "
              "Run with --device cpu --quick to check the code path.", file=sys.stderr)
        sys.exit(NO_CUDA)
    device = torch.device(args.device)
    if args.out is not None:
        out = args.out
    elif os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu_check.json"
    else:
        out = Path("benchmarks/results/gpu_check.json")
    if args.quick:
        grid, reps, samples, steps = [(8, 1), (8, 2)], 2, 10, 10
    else:
        grid, reps, samples, steps = [(64, 1), (64, 4), (256, 1), (256, 4)], 10, 500, 100
    started = time.perf_counter()
    rows = []
    for batch, k in grid:
        rows.append(train_steps(device=device, batch=batch, k=k, reps=reps))
        r = rows[-1]
        print(f"train B={batch} K={k}: plain {r['plain_s'] * 1e3:.1f} ms, dpsgd "
              f"{r['dpsgd_s'] * 1e3:.1f} ms, ratio {r['ratio']:.2f}", flush=True)
    rows.append(ddim_sampling(device=device, samples=samples, steps=steps, reps=max(1, reps // 3)))
    print(f"DDIM {samples} samples x {steps} steps: {rows[-1]['seconds']:.2f} s", flush=True)
    report = {
        "benchmark": "gpu_check", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "quick": args.quick,
        "seconds": time.perf_counter() - started, "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
