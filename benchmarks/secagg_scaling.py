"""secagg scaling in the number of clients: n in {10, 100, 1000} on a small vector.

Each n runs in a fresh subprocess (so that its peak resident memory is its
own) through `protocols.driver.run_round`, exactly as a federated run drives it:
the protocol bound to the roster (every advertised key set signed and checked
by every client), every message signed into a transcript file, the secure
default parameters of `protocols/secagg/params.py` (degree and threshold
derived from the documented security and correctness targets at each n, never
a constant), and a random `--dropout` fraction of clients gone before
MaskedInput (so their pairwise masks are rebuilt from Shamir shares).

Reported per n: wall and CPU seconds of the round, each split into client
steps, aggregator steps and the rest (encoding, transcript records, decoding);
CPU time is steadier than wall time on a shared machine. Bytes each client
receives and sends (mean over clients), split by kind: id lists and the
signatures that travel with them (O(n) per client), key material (routed keys,
proofs, sealed shares: O(k)), the vector, and headers. Peak RSS of the
subprocess and the RSS before the round. The headline ratios t(1000)/t(100),
wall and CPU, whole round and per part, against the growth of n k (the
goal: at most 1.2 times it), all measured in this one invocation.

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
from protocols.messages import decode
from protocols.roster import Identities
from protocols.secagg import SecAggProtocol, plan_graph
from protocols.stages import ClientInput
from protocols.transcript import TranscriptWriter


class Timed(SecAggProtocol):
    """secagg with a stopwatch (wall and CPU) around every client and aggregator step."""

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.seconds = {"client": 0.0, "server": 0.0}
        self.cpu = {"client": 0.0, "server": 0.0}

    def _timed(self, side: str, fn, *args, **kwargs):
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[side] += time.perf_counter() - t
            self.cpu[side] += time.process_time() - c

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


# What each field of a message is, for the bytes-by-kind split. Id lists travel
# with the signatures on them; "keys" is everything whose size grows with the
# degree k (routed keys, their proofs and roster signatures, sealed shares).
_FIELD_KIND = {
    "ids": "lists", "masked_senders": "lists", "included": "lists", "dropped": "lists",
    "signed_list": "lists", "signers": "lists", "missing": "lists",
    "signatures": "signatures", "missing_sigs": "signatures", "signature": "signatures",
    "missing_sig": "signatures",
    "routed": "keys", "c_pks": "keys", "s_pks": "keys", "e_pks": "keys", "id_sigs": "keys",
    "proofs": "keys", "receivers": "keys", "senders": "keys", "sealed": "keys",
    "b_owners": "keys", "b_shares": "keys", "sk_owners": "keys", "sk_shares": "keys",
    "c_pk": "keys", "s_pk": "keys", "e_pk": "keys", "id_sig": "keys",
    "masked": "vector", "total": "vector",
}
KINDS = ("lists", "signatures", "keys", "vector", "headers")


def _field_bytes(msg, name: str) -> int:
    value = getattr(msg, name)
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple):  # a packed id list, or strings in the JSON header
        return sum(len(v) + 1 for v in value)
    return 0


class ByteCounter:
    """The driver's tap: sorts each message's bytes by kind as it passes (keeping
    them all would hold O(n^2) bytes), timing itself so that the round's figures
    can leave its work out."""

    def __init__(self, clients: list[str]) -> None:
        self.members = set(clients)
        self.count = len(clients)
        self.totals = {d: dict.fromkeys(KINDS, 0) for d in ("down", "up")}
        self.wall = self.cpu = 0.0

    def __call__(self, stage: str, data: bytes) -> bytes:
        t, c = time.perf_counter(), time.process_time()
        msg = decode(data)
        direction = "up" if msg.sender in self.members else "down"
        counted = 0
        for name, _kind in msg.SCHEMA:
            kind = _FIELD_KIND.get(name)
            if kind is not None:
                size = _field_bytes(msg, name)
                self.totals[direction][kind] += size
                counted += size
        self.totals[direction]["headers"] += len(data) - counted
        self.wall += time.perf_counter() - t
        self.cpu += time.process_time() - c
        return data

    def per_client(self) -> dict[str, dict[str, float]]:
        """Mean bytes per client received ("down") and sent ("up"), by kind."""
        return {d: {k: v / self.count for k, v in by.items()} for d, by in self.totals.items()}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def one_cell(n: int, m: int, dropout: float, seed: int, profile: Path | None,
             max_weight: float | None = None) -> dict:
    """One round at n clients; runs in its own process."""
    ids = Identities.generate([f"c{i:04d}" for i in range(n)])
    protocol = Timed(**({} if max_weight is None else {"max_weight": max_weight})).bind(ids)
    protocol.seconds = {"client": 0.0, "server": 0.0}
    protocol.cpu = {"client": 0.0, "server": 0.0}
    counter = ByteCounter(list(ids.client_ids))
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
                               transcript=tw, dropouts=dropouts, tap=counter,
                               random_bytes=prg_stream(seed.to_bytes(32, "big"), nonce=b"bench"))
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            wall, cpu = wall - counter.wall, cpu - counter.cpu  # the benchmark's own tap
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(str(profile))
        transcript_bytes = path.stat().st_size
    keep = sorted(result.contributors)
    exact = np.sum([inputs[c].vector.astype(np.float64) for c in keep], axis=0)
    return {
        "n": n, "m": m, "dropout": dropout, "dropped": len(dropouts), "max_weight": max_weight,
        "degree": plan.degree, "threshold": plan.threshold,
        "ring_bits": result.stats["protocol"]["ring_bits"],
        "wall_s": wall, "cpu_s": cpu, "client_s": protocol.seconds["client"],
        "server_s": protocol.seconds["server"],
        "driver_transcript_s": wall - protocol.seconds["client"] - protocol.seconds["server"],
        "client_cpu_s": protocol.cpu["client"], "server_cpu_s": protocol.cpu["server"],
        "driver_transcript_cpu_s": cpu - protocol.cpu["client"] - protocol.cpu["server"],
        "bytes_per_client": counter.per_client(),
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
    # The default max_weight (2^20) needs a 65-bit ring at n = 5000; the inputs here
    # all weigh 1, so --max-weight 1 lets n = 5000 run (compare only rows run with it).
    parser.add_argument("--max-weight", type=float, default=None, help="secagg max_weight")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/secagg_scaling.json"))
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_cell(args.one, args.m, args.dropout, args.one, args.profile,
                                  args.max_weight)))
        return
    rows = []
    started = time.perf_counter()
    for n in args.n:
        extra = [] if args.max_weight is None else ["--max-weight", str(args.max_weight)]
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--m", str(args.m), *extra,
                              "--dropout", str(args.dropout)],
                             check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"n={n:5d} (k={row['degree']}, t={row['threshold']}, {row['dropped']} dropped): "
              f"{row['wall_s']:8.2f} s  (clients {row['client_s']:.2f}, aggregator "
              f"{row['server_s']:.2f}, driver+transcript {row['driver_transcript_s']:.2f})  "
              f"peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
        for d in ("down", "up"):
            b = row["bytes_per_client"][d]
            print(f"        bytes {d:4s} per client: " + ", ".join(f"{k} {b[k]:,.0f}" for k in KINDS),
                  flush=True)
    by_n = {r["n"]: r for r in rows}
    ratios = {}
    if 100 in by_n and 1000 in by_n:
        small, big = by_n[100], by_n[1000]
        nk = (big["n"] * big["degree"]) / (small["n"] * small["degree"])
        ratios["nk_growth"] = nk
        ratios["goal"] = 1.2 * nk
        ratios["t1000_over_t100"] = big["wall_s"] / small["wall_s"]
        ratios["cpu1000_over_cpu100"] = big["cpu_s"] / small["cpu_s"]
        for part in ("client", "server", "driver_transcript"):
            ratios[f"{part}_wall_ratio"] = big[f"{part}_s"] / small[f"{part}_s"]
            ratios[f"{part}_cpu_ratio"] = big[f"{part}_cpu_s"] / small[f"{part}_cpu_s"]
        print(f"t(1000)/t(100) = {ratios['t1000_over_t100']:.1f} wall, "
              f"{ratios['cpu1000_over_cpu100']:.1f} CPU time; n k grew {nk:.1f}x, goal <= "
              f"{ratios['goal']:.1f}x; per part (wall / CPU): " + ", ".join(
                  f"{part} {ratios[part + '_wall_ratio']:.1f} / {ratios[part + '_cpu_ratio']:.1f}"
                  for part in ("client", "server", "driver_transcript")))
    if 1000 in by_n and 5000 in by_n:
        small, big = by_n[1000], by_n[5000]
        ratios["nk_growth_5000_over_1000"] = (big["n"] * big["degree"]) / (small["n"] * small["degree"])
        ratios["t5000_over_t1000"] = big["wall_s"] / small["wall_s"]
        ratios["cpu5000_over_cpu1000"] = big["cpu_s"] / small["cpu_s"]
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
