"""Where a fused DP-SGD step spends its time, against a plain step (same process).

The fused engine (securediff/privacy/per_sample.py) takes one forward pass, a
backward pass to the layers' outputs only, then per layer a rule that gives the
per-sample squared norms and, once the clip factors are known, the clipped sum.
This script wraps every rule with timers and reports, per layer shape, the time
of its norms and of its clipped sum, with the step's remainder (forward,
backward to the outputs, noise, Adam). For every 3x3 convolution shape it also
times a third way to the same norms and sum, materialising per-sample
gradients as one batched matmul over unfolded patches, against the rule the
engine picks (ghost norm or grouped weight gradient): the alternative that
profiles suggest first.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/dpsgd_profile.py            # B 256, K 1
    .venv/bin/python benchmarks/dpsgd_profile.py --batch 64 --reps 10
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dpsgd_step  # noqa: E402  (the same model, data and steps as the ratio benchmark)

from securediff.privacy import per_sample as ps  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "dpsgd_profile.json"


def _median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def profile_rules(batch: int, k: int, reps: int) -> dict:
    plain, dp, params = dpsgd_step.make_steps("fused", batch=batch, k=k)
    spent: dict[tuple, float] = collections.defaultdict(float)
    original = dict(ps._RULES)

    def timed(kind, rule):
        def inner(m, a, g, b, kk):
            t = time.perf_counter()
            norms2, summer = rule(m, a, g, b, kk)
            key = (kind.__name__, tuple(a.shape[1:]), tuple(g.shape[1:]))
            spent[key + ("norms",)] += time.perf_counter() - t

            def timed_summer(c):
                t = time.perf_counter()
                out = summer(c)
                spent[key + ("sum",)] += time.perf_counter() - t
                return out
            return norms2, timed_summer
        return inner

    for _ in range(2):  # warm-up
        plain()
        dp()
    plain_ms, dp_ms = [], []
    for _ in range(reps):  # alternate, as the ratio benchmark does
        plain_ms.append(_median_ms(plain, 1))
        try:
            ps._RULES.update({kind: timed(kind, rule) for kind, rule in original.items()})
            dp_ms.append(_median_ms(dp, 1))
        finally:
            ps._RULES.update(original)
    per_step = {key: v / reps * 1e3 for key, v in spent.items()}
    norms = sum(v for key, v in per_step.items() if key[-1] == "norms")
    sums = sum(v for key, v in per_step.items() if key[-1] == "sum")
    p, d = statistics.median(plain_ms), statistics.median(dp_ms)
    return {
        "batch": batch, "noise_multiplicity": k, "params": params, "plain_ms": p, "dpsgd_ms": d,
        "ratio": d / p, "rules_norms_ms": norms, "rules_sums_ms": sums, "rest_ms": d - norms - sums,
        "layers": [{"layer": key[0], "input": list(key[1]), "output": list(key[2]), "part": key[3], "ms": v}
                   for key, v in sorted(per_step.items(), key=lambda kv: -kv[1])],
    }


def prefetch_effect(batch: int, k: int, reps: int) -> dict:
    """The DP-SGD step with its noise drawn in a worker thread during the passes
    (the default) against drawn afterwards, alternating, each against plain."""
    plain, with_prefetch, _ = dpsgd_step.make_steps("fused", batch=batch, k=k, prefetch_noise=True)
    _, without, _ = dpsgd_step.make_steps("fused", batch=batch, k=k, prefetch_noise=False)
    times: dict[str, list[float]] = {"plain": [], "prefetch": [], "after": []}
    for i in range(reps + 2):
        for name, fn in (("plain", plain), ("prefetch", with_prefetch), ("after", without)):
            ms = _median_ms(fn, 1)
            if i >= 2:
                times[name].append(ms)
    med = {name: statistics.median(v) for name, v in times.items()}
    return {"batch": batch, "noise_multiplicity": k, "plain_ms": med["plain"],
            "dpsgd_prefetch_ms": med["prefetch"], "dpsgd_noise_after_ms": med["after"],
            "ratio_prefetch": med["prefetch"] / med["plain"], "ratio_noise_after": med["after"] / med["plain"]}


def _unfold_bmm(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, c: torch.Tensor):
    patches = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
    per_sample = torch.bmm(g.reshape(g.shape[0], g.shape[1], -1), patches.transpose(1, 2))
    per_sample = per_sample.reshape(g.shape[0], -1)
    return per_sample.pow(2).sum(1), c @ per_sample


def _engine_rule(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, c: torch.Tensor):
    norms2, summer = ps._conv2d(m, a, g, a.shape[0], 1)
    return norms2, summer(c)


def compare_conv_paths(batch: int, reps: int) -> list[dict]:
    """The engine's rule against unfold + bmm on the default UNet's 3x3 conv shapes."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for cin, cout, side in [(32, 32, 8), (64, 32, 8), (1, 32, 8), (32, 32, 4), (64, 64, 4),
                            (128, 64, 4), (32, 64, 4)]:
        m = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        a = torch.randn(batch, cin, side, side, generator=gen)
        g = torch.randn(batch, cout, side, side, generator=gen)
        c = torch.rand(batch, generator=gen)
        n_engine, s_engine = _engine_rule(m, a, g, c)
        n_unfold, s_unfold = _unfold_bmm(m, a, g, c)
        torch.testing.assert_close(n_engine, n_unfold, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(s_engine[0].reshape(-1), s_unfold, rtol=1e-3, atol=1e-2)
        engine, unfold = [], []
        for _ in range(reps):
            engine.append(_median_ms(functools.partial(_engine_rule, m, a, g, c), 1))
            unfold.append(_median_ms(functools.partial(_unfold_bmm, m, a, g, c), 1))
        rows.append({"cin": cin, "cout": cout, "grid": side,
                     "engine_path": "ghost" if ps._conv_uses_ghost(cin, 3, 3, side * side) else "grouped",
                     "engine_ms": statistics.median(engine), "unfold_bmm_ms": statistics.median(unfold)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--multiplicity", type=int, default=1)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    step = profile_rules(args.batch, args.multiplicity, args.reps)
    print(f"B={args.batch} K={args.multiplicity}: plain {step['plain_ms']:.1f} ms, DP-SGD {step['dpsgd_ms']:.1f} ms "
          f"({step['ratio']:.2f}x); rules: norms {step['rules_norms_ms']:.1f} ms, clipped sums "
          f"{step['rules_sums_ms']:.1f} ms; rest {step['rest_ms']:.1f} ms")
    for row in step["layers"][:12]:
        print(f"  {row['ms']:7.2f} ms  {row['layer']:16s} {row['input']} -> {row['output']} {row['part']}")
    prefetch = prefetch_effect(args.batch, args.multiplicity, args.reps)
    print(f"  noise in a worker thread: {prefetch['ratio_prefetch']:.2f}x plain; drawn after the passes: "
          f"{prefetch['ratio_noise_after']:.2f}x (plain {prefetch['plain_ms']:.1f} ms)")
    convs = compare_conv_paths(args.batch, args.reps)
    for row in convs:
        print(f"  conv {row['cin']:3d}->{row['cout']:3d} on {row['grid']}x{row['grid']} ({row['engine_path']}): "
              f"engine {row['engine_ms']:7.2f} ms, unfold+bmm {row['unfold_bmm_ms']:7.2f} ms")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "dpsgd_profile", "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(), "step": step, "noise_prefetch": prefetch, "conv_paths": convs,
        "rows": [{"what": "step", **{k: v for k, v in step.items() if k != "layers"}}],
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
