"""secagg scaling in the number of clients: n in {10, 100, 1000} on a small vector.

Each n runs in a fresh subprocess (so that its peak resident memory is its
own) through `protocols.driver.run_round`, exactly as a federated run drives it:
the protocol bound to the roster (every advertised key set signed and checked
by every client), every message signed into a transcript file, the secure
default parameters of `protocols/secagg/params.py` (degree and threshold
derived from the documented security and correctness targets at each n, never
a constant), and a random `--dropout` fraction of clients gone before
MaskedInput (so their pairwise masks are rebuilt from Shamir shares).

Reported per n: wall seconds of the round, the seconds spent in client steps,
in aggregator steps and in the rest (encoding, transcript records, decoding),
the process CPU time of the round (steadier than wall time on a shared
machine), peak RSS of the subprocess and the RSS before the round, and the
headline ratio t(1000)/t(100) in wall and in CPU time, measured in this one
invocation.

    .venv/bin/python benchmarks/secagg_scaling.py                  # n = 10, 100, 1000, m = 1000
    .venv/bin/python benchmarks/secagg_scaling.py --n 10 100 --m 10000
    .venv/bin/python benchmarks/secagg_scaling.py --one 1000 --profile prof.out   # one cell, cProfile
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from protocols.driver import run_round
from protocols.hazmat.prg import prg_stream
from protocols.roster import Identities
from protocols.secagg import SecAggProtocol, plan_graph
from protocols.stages import ClientInput
from protocols.transcript import TranscriptWriter


class Timed(SecAggProtocol):
    """secagg with a stopwatch around every client and aggregator step."""

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.seconds = {"client": 0.0, "server": 0.0}

    def _timed(self, side: str, fn, *args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[side] += time.perf_counter() - t

    def client_start(self, **kw):
        return self._timed("client", super().client_start, **kw)

    def client_step(self, *a):
        return self._timed("client", super().client_step, *a)

    def server_start(self, **kw):
        return self._timed("server", super().server_start, **kw)

    def server_step(self, *a):
        return self._timed("server", super().server_step, *a)

    def server_result(self, *a):
        return self._timed("server", super().server_result, *a)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def one_cell(n: int, m: int, dropout: float, seed: int, profile: Path | None) -> dict:
    """One round at n clients; runs in its own process."""
    ids = Identities.generate([f"c{i:04d}" for i in range(n)])
    protocol = Timed().bind(ids)
    protocol.seconds = {"client": 0.0, "server": 0.0}
    plan = plan_graph(n, protocol.config)
    gen = np.random.default_rng(seed)  # benchmark data and dropout set only
    inputs = {c: ClientInput(vector=gen.uniform(-1, 1, m).astype(np.float32), weight=1.0)
              for c in ids.client_ids}
    gone = gen.choice(n, size=int(round(dropout * n)), replace=False)
    dropouts = {ids.client_ids[i]: "MaskedInput" for i in gone}
    rss_before = _rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "transcript.jsonl"
        with TranscriptWriter.open(path, identities=ids, protocol=protocol) as tw:
            profiler = None
            if profile is not None:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            t, cpu = time.perf_counter(), time.process_time()
            result = run_round(protocol, round_index=0, inputs=inputs, identities=ids,
                               transcript=tw, dropouts=dropouts,
                               random_bytes=prg_stream(seed.to_bytes(32, "big"), nonce=b"bench"))
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(str(profile))
        transcript_bytes = path.stat().st_size
    keep = sorted(result.contributors)
    exact = np.sum([inputs[c].vector.astype(np.float64) for c in keep], axis=0)
    return {
        "n": n, "m": m, "dropout": dropout, "dropped": len(dropouts),
        "degree": plan.degree, "threshold": plan.threshold,
        "ring_bits": result.stats["protocol"]["ring_bits"],
        "wall_s": wall, "cpu_s": cpu, "client_s": protocol.seconds["client"],
        "server_s": protocol.seconds["server"],
        "driver_transcript_s": wall - protocol.seconds["client"] - protocol.seconds["server"],
        "messages": result.stats["messages"], "bytes_up": result.bytes_up,
        "bytes_down": result.bytes_down, "transcript_bytes": transcript_bytes,
        "rss_before_mib": rss_before, "peak_rss_mib": _rss_mib(),
        "max_abs_error": float(np.abs(result.weighted_sum - exact).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--one", type=int, default=None, help="run one cell here and print it")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile output (with --one)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/secagg_scaling.json"))
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_cell(args.one, args.m, args.dropout, args.one, args.profile)))
        return
    rows = []
    started = time.perf_counter()
    for n in args.n:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--m", str(args.m),
                              "--dropout", str(args.dropout)],
                             check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"n={n:5d} (k={row['degree']}, t={row['threshold']}, {row['dropped']} dropped): "
              f"{row['wall_s']:8.2f} s  (clients {row['client_s']:.2f}, aggregator "
              f"{row['server_s']:.2f}, driver+transcript {row['driver_transcript_s']:.2f})  "
              f"peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
    by_n = {r["n"]: r for r in rows}
    ratios = {}
    if 100 in by_n and 1000 in by_n:
        ratios["t1000_over_t100"] = by_n[1000]["wall_s"] / by_n[100]["wall_s"]
        ratios["cpu1000_over_cpu100"] = by_n[1000]["cpu_s"] / by_n[100]["cpu_s"]
        print(f"t(1000)/t(100) = {ratios['t1000_over_t100']:.1f} wall, "
              f"{ratios['cpu1000_over_cpu100']:.1f} CPU time")
    if 10 in by_n and 100 in by_n:
        ratios["t100_over_t10"] = by_n[100]["wall_s"] / by_n[10]["wall_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "secagg_scaling", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
        "seconds": time.perf_counter() - started, "rows": rows, "ratios": ratios,
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
