"""Wall time and peak memory of `securediff demo`, the README's first command.

Runs the demo in a child process (into a temporary run directory that is
removed afterwards) and reports its wall time, its peak RSS (the child's
getrusage maximum) and the run's mean downstream accuracy, so a speed-up that
costs utility shows. The goal is under 5 minutes on this 2-core
machine; the load average at the start is recorded because other work on the
machine moves this absolute figure.

    .venv/bin/python benchmarks/demo_time.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_demo(out_dir: Path) -> dict:
    securediff = Path(sys.executable).with_name("securediff")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run([str(securediff), "demo", "--run.out_dir", str(out_dir), "--json"], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"demo failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    result = json.loads(proc.stdout)
    return {
        "wall_s": wall,
        "goal_s": 300.0,
        "ratio_to_goal": wall / 300.0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "run_peak_rss_mb": result["summary"].get("peak_rss_mb"),
        "mean_accuracy": result["summary"]["mean"].get("accuracy"),
        "protocol": result["summary"].get("protocol"),
        "load_avg_1m_at_start": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=HERE / "results" / "demo_time.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="securediff-demo-bench-"))
    try:
        row = run_demo(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"demo: {row['wall_s']:.1f} s wall ({row['ratio_to_goal']:.2f}x the 300 s goal), "
          f"peak {row['peak_rss_mib']:.0f} MiB, mean accuracy {row['mean_accuracy']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "demo_time", "when": datetime.now().isoformat(timespec="seconds"),
        "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "rows": [row],
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
