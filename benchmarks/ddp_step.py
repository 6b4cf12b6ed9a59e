"""A distributed DP-SGD step (training + Skellam encoding + secagg) against a
plain DP-SGD step on the pooled data, measured side by side in one process.

The default UNet (securediff.config defaults) on 8x8 digits-shaped input, the
demo's 10 clients holding ~1,078 member records between them (digits, 25% test,
20% holdout), expected batch 256 over all of them (q = 256 / N), K = 1:

- distributed: each client Poisson-samples its records, computes its clipped
  per-sample gradient sum (securediff.privacy.per_sample) on its copy of the
  shared model, encodes its Skellam share; one in-process secagg round (the
  10 clients, the protocol's default graph, with the Skellam plan's ring and
  noise floor); decode; Adam step. Clients run one after another on one
  process, so the figure is the total work of a step, not its latency with 10
  machines in parallel (that is the `per_client_s` + secagg column);
- pooled: securediff's DPSGD on all N records in one place (Gaussian noise), the
  trusted-curator baseline that distributed DP emulates.

Repetitions alternate the two so load on this shared machine hits both alike;
the figure is the ratio of medians.

    .venv/bin/python benchmarks/ddp_step.py                        # both settings below
    .venv/bin/python benchmarks/ddp_step.py --configs 16:1078 --reps 3   # the core suite's hybrid only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from protocols import ClientInput, Identities, make_protocol, run_round
from securediff.config import Config
from securediff.diffusion.loss import diffusion_loss
from securediff.diffusion.schedule import make_schedule
from securediff.federation.distributed import ClientGradients, apply_noisy_sum, decode_sum
from securediff.models import UNet, UNetSpec
from securediff.privacy.dpsgd import DPSGD, poisson_sample
from securediff.privacy.skellam import encode_share, plan_skellam
from securediff.rng import RandomSource

MEMBERS = 1078  # the demo's member records over 10 clients


def build(clients: int, batch: int, base_channels: int):
    cfg = Config().model
    spec = UNetSpec(base_channels=base_channels, channel_mults=cfg.channel_mults)
    schedule = make_schedule("linear", T=1000)
    source = RandomSource.insecure_from_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(MEMBERS, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (MEMBERS,), generator=gen)
    parts = np.array_split(np.arange(MEMBERS), clients)
    q = min(1.0, batch / MEMBERS)
    shared = UNet(spec)
    shared_opt = torch.optim.Adam(shared.parameters(), 1e-3)
    params = [p for p in shared.parameters() if p.requires_grad]
    dim = sum(p.numel() for p in params)
    plan = plan_skellam(dim=dim, l2_clip=1.0, noise_multiplier=1.0, min_survivors=max(1, (4 * clients + 4) // 5),
                        max_clients=clients, expected_batch=batch)
    ids = [f"client-{i:02d}" for i in range(clients)]
    identities = Identities.generate(ids)
    protocol = make_protocol("secagg", value_bits=plan.secagg_value_bits,
                             min_contributors=plan.min_survivors).bind(identities)
    workers = [ClientGradients(shared) for _ in ids]
    timing: dict[str, float] = {}
    counter = {"round": 0}

    def loss_fn(model, xb, yb):
        return diffusion_loss(model, xb, yb, schedule=schedule, start=0, end=1000, generator=gen)

    def distributed_step() -> None:
        t0 = time.perf_counter()
        inputs = {}
        for cid, part, grads in zip(ids, parts, workers, strict=True):
            grads.load(params)
            idx = part[poisson_sample(len(part), sample_rate=q, source=source)]
            summed = grads.clipped_sum(x[idx], y[idx], clip=1.0, multiplicity=1, schedule=schedule,
                                       generator=gen, null_label=spec.null_label, label_dropout=0.1)
            inputs[cid] = ClientInput(vector=encode_share(summed, plan, source), weight=1.0)
        t1 = time.perf_counter()
        result = run_round(protocol, round_index=counter["round"], inputs=inputs, identities=identities,
                           transcript=None, dropouts={}, random_bytes=source.random_bytes)
        counter["round"] += 1
        t2 = time.perf_counter()
        total = np.rint(np.asarray(result.weighted_sum)).astype(np.int64)
        apply_noisy_sum(shared, shared_opt, decode_sum(total, plan), batch)
        t3 = time.perf_counter()
        timing.update(clients_s=t1 - t0, secagg_s=t2 - t1, server_s=t3 - t2)

    pooled_model = UNet(spec)
    pooled_opt = torch.optim.Adam(pooled_model.parameters(), 1e-3)
    dp = DPSGD(model=pooled_model, optimizer=pooled_opt, max_grad_norm=1.0, noise_multiplier=1.0,
               expected_batch_size=batch, source=source, ledger=None)

    def pooled_step() -> None:
        idx = poisson_sample(MEMBERS, sample_rate=q, source=source)
        dp.step(loss_fn, x[idx], y[idx])

    return distributed_step, pooled_step, timing, {"dim": dim, "modulus_bits": plan.modulus_bits,
                                                   "min_survivors": plan.min_survivors, "q": q}


def measure(clients: int, batch: int, base_channels: int, reps: int) -> dict:
    distributed_step, pooled_step, timing, info = build(clients, batch, base_channels)
    times: dict[str, list[float]] = {"distributed": [], "pooled": []}
    parts: dict[str, list[float]] = {"clients_s": [], "secagg_s": [], "server_s": []}
    for i in range(reps + 1):
        for name, fn in (("distributed", distributed_step), ("pooled", pooled_step)):
            t = time.perf_counter()
            fn()
            if i >= 1:  # the first repetition warms up
                times[name].append(time.perf_counter() - t)
                if name == "distributed":
                    for k in parts:
                        parts[k].append(timing[k])
    d, p = statistics.median(times["distributed"]), statistics.median(times["pooled"])
    row = {"clients": clients, "expected_batch": batch, "base_channels": base_channels, "distributed_s": d,
           "pooled_s": p, "ratio": d / p, **{k: statistics.median(v) for k, v in parts.items()},
           "per_client_s": statistics.median(parts["clients_s"]) / clients, **info}
    print(f"{clients} clients, base {base_channels}, expected batch {batch}: distributed {d:.3f} s "
          f"(clients {row['clients_s']:.3f}, secagg {row['secagg_s']:.3f}, server {row['server_s']:.3f}) "
          f"vs pooled DP-SGD {p:.3f} s: ratio {d / p:.2f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--configs", default="32:256,16:1078",
                        help="base_channels:expected_batch pairs (default: the library default model at "
                             "batch 256, and the core suite's hybrid)")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ddp_step.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for pair in args.configs.split(","):
        base, batch = (int(v) for v in pair.split(":"))
        rows.append(measure(args.clients, batch, base, args.reps))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "ddp_step", "when": datetime.now().isoformat(timespec="seconds"),
        "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "torch_threads": 1, "rows": rows,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
