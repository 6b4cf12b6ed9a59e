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

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="+", choices=[b.removesuffix(".py") for b in BENCHMARKS])
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if args.only is None or b.removesuffix(".py") in args.only]
    for name in chosen:
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, str(HERE / name)], check=True)
    subprocess.run([sys.executable, str(HERE / "tables.py")], check=True)
