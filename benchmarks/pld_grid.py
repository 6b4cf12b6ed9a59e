"""The PLD grid: epsilon and seconds on the fixed 1e-3 grid against the refined one.

accountants._pld halves the grid from 2e-3 until two successive grids agree
within 1% (down to 1e-4). For each case: epsilon on 1e-3 alone, the refined
epsilon, a 5e-5 reference, and the seconds of each; then the seconds of one
noise-multiplier calibration (the runner's layer-split plan) both ways.

    .venv/bin/python benchmarks/pld_grid.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path
from unittest import mock

from securediff.privacy import accountants
from securediff.privacy.ledger import DPSGDEvent

CASES = (  # (z, q, steps, relation)
    (1.244, 0.001, 5000, "add_remove"),  # small epsilon: the grid matters
    (1.244, 0.001, 5000, "replace_one"),
    (1.0, 256 / 50000, 10000, "add_remove"),  # FACTS.md's DP-SGD reference
    (3.519, 64 / 114, 150, "add_remove"),  # a layer-split client of the core suite (114 records)
    (3.519, 64 / 114, 150, "replace_one"),
)
DELTA = 1e-5


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _fixed(interval: float):
    """accountants._pld on one grid only (the behaviour before refinement)."""
    def pld(part, *, relation):
        return accountants._pld_on_grid(part, relation=relation, interval=interval)
    return mock.patch.object(accountants, "_pld", pld)


def measure() -> dict:
    rows = []
    for z, q, steps, relation in CASES:
        events = [DPSGDEvent(z, q, steps, "shared")]

        eps = partial(accountants.compose_epsilon, events, delta=DELTA, accountant="pld", relation=relation)

        with _fixed(1e-3):
            coarse, t_coarse = _timed(eps)
        refined, t_refined = _timed(eps)
        with _fixed(5e-5):
            reference, t_reference = _timed(eps)
        rows.append({"z": z, "q": q, "steps": steps, "relation": relation,
                     "epsilon": {"grid_1e-3": coarse, "refined": refined, "grid_5e-5": reference},
                     "seconds": {"grid_1e-3": t_coarse, "refined": t_refined, "grid_5e-5": t_reference}})
        print(json.dumps(rows[-1]), flush=True)

    def calibrate():
        return accountants.calibrate_noise_multiplier(target_epsilon=10.0, sample_rate=64 / 114, steps=150,
                                                      delta=DELTA)
    with _fixed(1e-3):
        z_fixed, t_fixed = _timed(calibrate)
    z_refined, t_cal = _timed(calibrate)
    calibration = {"target_epsilon": 10.0, "q": 64 / 114, "steps": 150,
                   "noise_multiplier": {"grid_1e-3": z_fixed, "refined": z_refined},
                   "seconds": {"grid_1e-3": t_fixed, "refined": t_cal}}
    print(json.dumps(calibration), flush=True)
    return {"cases": rows, "calibration": calibration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = measure()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
