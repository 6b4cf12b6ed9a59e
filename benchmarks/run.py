"""Run every benchmark (not part of the tests), then write the Markdown tables.

Each script writes benchmarks/results/<name>.json; benchmarks/tables.py turns
them all into benchmarks/results/RESULTS.md. `--only NAME ...` runs a subset
(the others keep their last JSON, and the tables are rewritten from all).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["dpsgd_step.py", "dpsgd_profile.py", "ckks_tee.py", "secagg_vs_flower.py", "mask_prg.py",
              "secagg_scaling.py", "demo_time.py", "ddp_step.py", "flower_loopback.py"]
# Benchmarks run again with arguments, under their own result name. n = 5000 takes
# about 5 minutes and 4.6 GB here (docs/performance.md).
VARIANTS = {
    "secagg_scaling_5000": ["secagg_scaling.py", "--n", "1000", "5000", "--max-weight", "1",
                            "--out", str(HERE / "results" / "secagg_scaling_5000.json")],
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    runs = {b.removesuffix(".py"): [b] for b in BENCHMARKS} | VARIANTS
    parser.add_argument("--only", nargs="+", choices=list(runs))
    args = parser.parse_args()
    chosen = [name for name in runs if args.only is None or name in args.only]
    for name in chosen:
        script, *extra = runs[name]
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *extra], check=True)
    subprocess.run([sys.executable, str(HERE / "tables.py")], check=True)
