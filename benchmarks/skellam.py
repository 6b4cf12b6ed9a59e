"""The Skellam mechanism: sampler speed and one worked plan with its epsilons.

Sampler: median seconds for one client's share of `--dim` Skellam draws (two
Poisson draws each, every uniform from ChaCha20), at the share variance of the
worked plan, beside the cost of the ChaCha20 uniforms alone (two per Poisson
draw; the sampler uses about 2.3) and numpy's PCG64 Poisson for scale.

Worked plan: d, C, noise multiplier, q, steps, delta as in the issue; the
primary epsilon (paper's bound + Zhu-Wang), the numeric one (exact divergences
of the subsampled 1-D Skellam at shift round(Delta2)) and Opacus' RDP epsilon
of the Gaussian with the same sigma relative to Delta2.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/skellam.py
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np

from securediff.privacy.accountants import dpsgd_epsilon
from securediff.privacy.skellam import plan_skellam, sample_skellam
from securediff.privacy.skellam_accounting import (
    NUMERIC_ORDERS,
    numeric_skellam_epsilon,
    skellam_epsilon,
)
from securediff.rng import RandomSource


def _median_seconds(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, default=600_000)
    parser.add_argument("--noise-multiplier", type=float, default=1.0)
    parser.add_argument("--sample-rate", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--min-survivors", type=int, default=8)
    parser.add_argument("--expected-batch", type=float, default=256.0)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()

    plan = plan_skellam(dim=args.dim, l2_clip=1.0, noise_multiplier=args.noise_multiplier,
                        min_survivors=args.min_survivors, max_clients=args.clients,
                        expected_batch=args.expected_batch)
    source = RandomSource.insecure_from_seed(0)
    generator = np.random.Generator(np.random.PCG64(0))  # comparison only
    results: dict[str, object] = {
        "dim": args.dim,
        "share_variance": plan.share_variance,
        "skellam_share_s": _median_seconds(
            lambda: sample_skellam(plan.share_variance, args.dim, source), args.reps),
        "uniforms_2_per_draw_s": _median_seconds(lambda: source.uniform(4 * args.dim), args.reps),
        "numpy_pcg64_poisson_pair_s": _median_seconds(
            lambda: generator.poisson(plan.share_variance / 2, 2 * args.dim), args.reps),
        "small_variance_3_s": _median_seconds(lambda: sample_skellam(3.0, args.dim, source), 3),
    }
    results["draws_per_s"] = args.dim / results["skellam_share_s"]

    common = dict(sample_rate=args.sample_rate, steps=args.steps, delta=args.delta)
    shift = round(plan.l2_sensitivity)
    results["plan"] = {
        "scale": plan.scale, "modulus_bits": plan.modulus_bits,
        "secagg_value_bits": plan.secagg_value_bits, "wrap_probability": plan.wrap_probability,
        "l2_sensitivity": plan.l2_sensitivity, "l1_sensitivity": plan.l1_sensitivity,
        "noise_variance": plan.noise_variance, "noise_multiplier": plan.noise_multiplier,
    }
    start = time.perf_counter()
    results["eps_primary"] = skellam_epsilon(l1=plan.l1_sensitivity, l2=plan.l2_sensitivity,
                                             variance=plan.noise_variance, **common)
    results["eps_primary_numeric_orders_shift"] = skellam_epsilon(
        l1=shift, l2=shift, variance=plan.noise_variance, orders=NUMERIC_ORDERS, **common)
    results["eps_numeric"] = numeric_skellam_epsilon(shift=shift, variance=plan.noise_variance,
                                                     **common)
    results["numeric_s"] = time.perf_counter() - start
    results["eps_gaussian_rdp"] = dpsgd_epsilon(
        noise_multiplier=math.sqrt(plan.noise_variance) / plan.l2_sensitivity,
        accountant="rdp", **common)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
