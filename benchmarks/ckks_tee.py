"""Blind aggregation by ckks and tee against plain, measured side by side in one run.

Three figures, each a ratio against plain measured in the same process:

1. protocol round: `run_round` with a signed transcript, for the demo's shared
   model (10 clients, the default UNet's shared vector) and for 10^6 parameters;
   per-round seconds (median over the repetitions, protocols interleaved so that
   load on this shared machine hits all alike) and bytes up/down;
2. aggregation alone: CKKS encrypt (every client) + add + decrypt (one client)
   against the plain weighted sum in numpy, the same vectors;
3. end to end (--e2e-rounds): `securediff train` at the demo's default local
   training (30 shared and 30 personal steps per client per round, 10 clients),
   the mean of each run's per-round seconds from metrics.json, plain against ckks
   and tee (same config, insecure-deterministic seed 0, so the same training).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from protocols.ckks import CkksContext, CkksParams
from protocols.driver import run_round
from protocols.registry import make_protocol
from protocols.roster import Identities
from protocols.stages import ClientInput
from protocols.transcript import TranscriptWriter

PROTOCOLS = ("plain", "ckks", "tee")


def demo_length() -> int:
    from securediff.config import Config
    from securediff.models import UNet, UNetSpec

    cfg = Config().model
    model = UNet(UNetSpec(base_channels=cfg.base_channels, channel_mults=cfg.channel_mults,
                          attention=cfg.attention, groups=cfg.groups))
    return sum(p.numel() for p in model.parameters())


def inputs_for(length: int, clients: int) -> dict[str, ClientInput]:
    rng = np.random.default_rng(0)  # benchmark data only
    return {f"client-{i:02d}": ClientInput(vector=(rng.normal(size=length) * 1e-3).astype(np.float32),
                                           weight=float(80 + 7 * i))
            for i in range(clients)}


def rounds(length: int, clients: int, reps: int, tmp: Path) -> dict:
    inputs = inputs_for(length, clients)
    ids = Identities.generate(list(inputs))
    protocols = {name: make_protocol(name) for name in PROTOCOLS}
    exact = sum(inp.weight * inp.vector.astype(np.float64) for _, inp in sorted(inputs.items()))
    times: dict[str, list[float]] = {n: [] for n in PROTOCOLS}
    out: dict = {"length": length, "clients": clients, "reps": reps}
    for rep in range(reps):
        for name, protocol in protocols.items():
            path = tmp / f"{name}-{length}-{rep}.jsonl"
            with TranscriptWriter.open(path, identities=ids, protocol=protocol) as tw:
                t = time.perf_counter()
                result = run_round(protocol, round_index=0, inputs=inputs, identities=ids,
                                   transcript=tw)
                times[name].append(time.perf_counter() - t)
            path.unlink()
            error = float(np.abs(result.weighted_sum - exact).max())
            out[name] = {"bytes_up": result.bytes_up, "bytes_down": result.bytes_down,
                         "max_abs_error": max(error, out.get(name, {}).get("max_abs_error", 0.0))}
    base = statistics.median(times["plain"])
    for name in PROTOCOLS:
        med = statistics.median(times[name])
        out[name].update(seconds=med, ratio_to_plain=med / base,
                         bytes_ratio_to_plain=(out[name]["bytes_up"] + out[name]["bytes_down"])
                         / (out["plain"]["bytes_up"] + out["plain"]["bytes_down"]))
    return out


def aggregation_only(length: int, clients: int, reps: int) -> dict:
    inputs = inputs_for(length, clients)
    params = CkksParams()
    keyed = CkksContext.from_key_seed(params, os.urandom(64))
    public = CkksContext.public(params)
    scaled = [inp.weight * inp.vector.astype(np.float64) for _, inp in sorted(inputs.items())]
    plain_t, ckks_t, parts = [], [], {"encrypt": [], "add": [], "decrypt": []}
    for _ in range(reps):
        t = time.perf_counter()
        acc = np.zeros(length)
        for v in scaled:
            acc += v
        plain_t.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        blobs = [keyed.encrypt(v, random_bytes=os.urandom) for v in scaled]
        t1 = time.perf_counter()
        total = None
        for b in blobs:
            total = public.accumulate(total, public.load(b))
        summed = public.save(total)
        t2 = time.perf_counter()
        result = keyed.decrypt(summed, length=length)
        t3 = time.perf_counter()
        ckks_t.append(t3 - t0)
        for key, dt in (("encrypt", t1 - t0), ("add", t2 - t1), ("decrypt", t3 - t2)):
            parts[key].append(dt)
    p, c = statistics.median(plain_t), statistics.median(ckks_t)
    return {"length": length, "clients": clients, "plain_sum_s": p, "ckks_s": c, "ratio": c / p,
            "ckks_parts_s": {k: statistics.median(v) for k, v in parts.items()},
            "ciphertext_bytes_per_client": sum(len(b) for b in blobs[0]),
            "max_abs_error_unflooded": float(np.abs(result - acc).max())}


def end_to_end(rounds_: int, tmp: Path) -> dict:
    exe = Path(sys.executable).with_name("securediff")
    out: dict = {"rounds": rounds_}
    for name in PROTOCOLS:
        run_dir = tmp / f"e2e-{name}"
        # The demo spreads 300 personal steps over 10 rounds: keep 30 per round here.
        subprocess.run([str(exe), "train", "--protocol", name, "--federation.rounds", str(rounds_),
                        "--training.personal_steps", str(30 * rounds_),
                        "--run.name", name, "--run.out_dir", str(run_dir), "--insecure-deterministic", "0",
                        "--eval.samples_per_class", "1", "--eval.evaluator_epochs", "1", "--json"],
                       check=True, stdout=subprocess.DEVNULL)
        logs = json.loads((run_dir / name / "metrics.json").read_text())["summary"]["rounds"]
        out[name] = {"round_seconds": [r["seconds"] for r in logs],
                     "mean_round_seconds": statistics.fmean(r["seconds"] for r in logs)}
    for name in PROTOCOLS:
        out[name]["ratio_to_plain"] = out[name]["mean_round_seconds"] / out["plain"]["mean_round_seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help="vector lengths (default: the demo's shared model and 10^6)")
    parser.add_argument("--e2e-rounds", type=int, default=1)
    parser.add_argument("--parts", nargs="+", default=["rounds", "aggregation", "e2e"],
                        choices=["rounds", "aggregation", "e2e"],
                        help="run only these parts; the others keep their last results in --out")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ckks_tee.json"))
    args = parser.parse_args()
    lengths = args.lengths or [demo_length(), 1_000_000]
    report: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    stamp = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_avg_1m": os.getloadavg()[0],
             "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        if "rounds" in args.parts:
            report["rounds"] = {**stamp, "rows": []}
            for length in lengths:
                row = rounds(length, args.clients, args.reps, Path(tmp))
                report["rounds"]["rows"].append(row)
                print(f"round, {length} params x {args.clients} clients: "
                      + "  ".join(f"{n} {row[n]['seconds']:.2f}s ({row[n]['ratio_to_plain']:.1f}x, "
                                  f"{row[n]['bytes_ratio_to_plain']:.1f}x bytes)" for n in PROTOCOLS),
                      flush=True)
        if "aggregation" in args.parts:
            report["aggregation_only"] = {**stamp, "rows": []}
            for length in lengths:
                agg = aggregation_only(length, args.clients, args.reps)
                report["aggregation_only"]["rows"].append(agg)
                print(f"aggregation only, {length} params: plain sum {agg['plain_sum_s'] * 1e3:.1f} ms, "
                      f"ckks {agg['ckks_s']:.2f}s ({agg['ratio']:.0f}x)", flush=True)
        if "e2e" in args.parts:
            e2e = {**stamp, **end_to_end(args.e2e_rounds, Path(tmp))}
            report["end_to_end"] = e2e
            print("end to end, demo: " + "  ".join(
                f"{n} {e2e[n]['mean_round_seconds']:.1f}s/round ({e2e[n]['ratio_to_plain']:.2f}x)"
                for n in PROTOCOLS), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
