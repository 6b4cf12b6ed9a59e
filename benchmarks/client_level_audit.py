"""The client-level audit (audits/client_level.py) against the accountant's claim.

Runs client-level DP aggregation through real secagg rounds (protocols.run_round)
with real clients (least-squares models trained locally each round) and
canary clients, every client in every round, server learning rate 1, no server
momentum; the auditor reads only each round's release. Prints, per repetition,
the one-shot estimate, the accountant's client-level epsilon and their ratio;
then a run with the noise off (the estimate must exceed three times the claim).
Each repetition draws its own canaries, data and noise (seed = repetition).

    .venv/bin/python benchmarks/client_level_audit.py [--repetitions 3] [--mechanism gaussian]
        [--canaries 200] [--dim 8192] [--rounds 5] [--epsilon 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from audits.client_level import audit_synthetic_run
from securediff.rng import RandomSource


def one(args: argparse.Namespace, seed: int, *, noise: bool) -> dict:
    started = time.perf_counter()
    audit = audit_synthetic_run(
        mechanism=args.mechanism, client_epsilon=args.epsilon if noise else None, canaries=args.canaries,
        canaries_out=args.canaries_out, dim=args.dim, rounds=args.rounds, statistic=args.statistic,
        generator=np.random.default_rng(seed), source=RandomSource.insecure_from_seed(seed))
    return audit.to_dict() | {"seed": seed, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--mechanism", choices=("gaussian", "skellam"), default="gaussian")
    parser.add_argument("--canaries", type=int, default=200)
    parser.add_argument("--canaries-out", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--statistic", choices=("sum", "max"), default="sum")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for seed in range(args.repetitions):
        row = one(args, seed, noise=True)
        rows.append(row)
        print(f"rep {seed}: z={row['noise_multiplier']:.4f} estimate={row['estimate']:.3f} "
              f"claimed={row['claimed']:.3f} ratio={row['estimate'] / row['claimed']:.3f} "
              f"mu={row['mu']:.3f} ({row['seconds']} s)", flush=True)
    off = one(args, args.repetitions, noise=False)
    claimed = rows[0]["claimed"]
    print(f"noise off: estimate={off['estimate']:.3f} = {off['estimate'] / claimed:.1f} x the claim "
          f"{claimed:.3f} (mu={off['mu']:.3f}, {off['seconds']} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "noised": rows, "noise_off": off}, indent=1) + "\n")


if __name__ == "__main__":
    main()
