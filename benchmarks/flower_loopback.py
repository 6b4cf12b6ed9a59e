"""Flower on loopback: secagg against Flower's own SecAgg+, with plain as the floor.

One flower-superlink and N flower-supernode processes on 127.0.0.1 (default 10),
started once; three runs submitted to them one after another with `flwr run`,
so every protocol meets the same SuperNodes with the same settings (Flower's
defaults: subprocess isolation, a ClientApp process per message):

- `secagg`: securediff's ServerApp/ClientApp (securediff/flower/apps.py) in the
  insecure deterministic test mode (`inputs = "test-vectors"`: no training), at
  its secure default degree and threshold for N;
- `flower-secaggplus`: Flower's `SecAggPlusWorkflow` and `secaggplus_mod`
  (benchmarks/flower_secaggplus_app.py) at the same N, with num_shares =
  degree + 1 (Flower counts the node itself) and the same threshold;
- `flower-secaggplus-fastpoll`: the same Flower app with its exchanges' replies
  pulled every REPLY_POLL_SECONDS, as securediff's ServerApp pulls them
  (securediff/flower/apps.py), instead of Grid.send_and_receive's fixed 3 s: what
  the protocols cost apart from that choice;
- `plain`: securediff's app with the plain protocol (no masking): the floor.

Each protocol aggregates a float32 vector of `--length` values per node.
Reported per protocol: seconds per round (the ServerApp's own clock; the first
round of each run is left out of the mean: it also pays for installing the app
on each node), exchanges per round (Flower messages one SuperNode receives in the
round's group, counted in the SuperNode logs, the same way for every protocol)
and seconds per exchange; where a SuperNode's time goes (median seconds from
pulling a message to pushing its reply, and from a reply to the next message,
read from its log lines, which are time-stamped as they are written); the load
average is stored before and after each run.

The runs are interleaved: `--repeats` passes over the protocols, every other
pass in reverse order (secagg, Flower, plain, then plain, Flower, secagg), so
that a machine that slows down or speeds up during the benchmark weighs on every
protocol alike; the means pool the rounds of all passes and each pass's own
ratio is stored too. The SuperNodes write Python's bytecode cache, as Python
does by default: the first ClientApp process of an app compiles its modules and
later ones load them, which Flower's own modules get from pip at install time
(a shell with PYTHONDONTWRITEBYTECODE set would otherwise make every one of our
processes compile the whole app again).

    .venv/bin/python benchmarks/flower_loopback.py            # 10 nodes, 3 rounds, 2 passes
    .venv/bin/python benchmarks/flower_loopback.py --nodes 4 --rounds 2 --protocols plain
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import flwr

from protocols.secagg import SecAggProtocol, plan_graph
from securediff.flower.apps import REPLY_POLL_SECONDS
from securediff.flower.keys import keygen, make_roster
from securediff.flower.loopback import (
    Processes,
    free_port,
    superlink_command,
    supernode_command,
    wait_for_port,
    write_flower_home,
)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROTOCOLS = ("secagg", "flower-secaggplus", "flower-secaggplus-fastpoll", "plain")
SEED, STAGE_TIMEOUT = 11, 300.0
# What a SuperNode logs for each message it pulls: the run and group, then "Receiving".
_GROUP = re.compile(r"\[RUN (\d+), ROUND ([^\]]+)\]")
_RECEIVING = re.compile(r"Receiving: (\S+) message")
# Each SuperNode's log lines are prefixed with the time they were written (Flower's
# own log lines carry none), by a filter the SuperNode's output is piped through.
_STAMPER = ("import sys, time\n"
            "for line in sys.stdin:\n"
            "    sys.stdout.write(f'{time.time():.3f} {line}')\n"
            "    sys.stdout.flush()\n")
_STAMPED = re.compile(r"^(\d+\.\d+) ")


def timestamped(cmd: list[str]) -> list[str]:
    """`cmd` with its output piped through the time-stamping filter (one process group:
    Processes.kill ends both)."""
    line = " ".join(shlex.quote(c) for c in cmd)
    return ["bash", "-c", f"{line} 2>&1 | {shlex.quote(sys.executable)} -u -c "
                          f"{shlex.quote(_STAMPER)}"]


def node_timings(logs: list[Path], offsets: dict[Path, int]) -> dict[str, float | None]:
    """Where a SuperNode's time goes, from its time-stamped log since `offsets`, median
    over nodes and messages: `handling_s` from pulling a message ("Receiving") to
    pushing its reply ("Sending": the SuperExec's poll, the ClientApp process, the
    SuperNode's 0.5 s reply poll) and `idle_s` from a reply sent to the next message
    pulled (the SuperNode's 3 s sleep after an empty pull, and the ServerApp's turn)."""
    handling, idle = [], []
    for path in logs:
        received = sent = None
        for line in path.read_bytes()[offsets.get(path, 0):].decode(errors="replace").splitlines():
            if not (m := _STAMPED.match(line)):
                continue
            t = float(m.group(1))
            if "Receiving:" in line:
                if sent is not None:
                    idle.append(t - sent)
                received, sent = t, None
            elif "Sending:" in line and received is not None:
                handling.append(t - received)
                received = None
            elif "Sent successfully" in line:
                sent = t
    return {"node_handling_s": statistics.median(handling) if handling else None,
            "node_idle_s": statistics.median(idle) if idle else None}


def exchanges_per_round(logs: list[Path], offsets: dict[Path, int]) -> dict[str, int]:
    """Messages each SuperNode received per group since `offsets` (the most any node
    received), for the numbered groups (rounds) in the order they first appear."""
    most: dict[str, int] = {}
    order: list[str] = []
    for path in logs:
        text = path.read_bytes()[offsets.get(path, 0):].decode(errors="replace")
        group, counts = None, Counter()
        for line in text.splitlines():
            if m := _GROUP.search(line):
                group = m.group(2)
            elif _RECEIVING.search(line) and group is not None:
                counts[group] += 1
                if group not in order:
                    order.append(group)
                group = None
        for g, c in counts.items():
            most[g] = max(most.get(g, 0), c)
    return {g: most[g] for g in order if g.isdigit()}


def messages_received(logs: list[Path], offsets: dict[Path, int]) -> int:
    """Messages all SuperNodes received since `offsets`: one ClientApp process each."""
    return sum(len(_RECEIVING.findall(p.read_bytes()[offsets.get(p, 0):].decode(errors="replace")))
               for p in logs)


def clientapp_cpu_seconds() -> float:
    """CPU (user + system) of the ClientApp processes that ended, as the SuperExecs that
    started them have reaped them (their children's times in /proc/PID/stat)."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"flower-superexec" not in (proc / "cmdline").read_bytes():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[13]) + int(fields[14])  # cutime, cstime (stat fields 16, 17)
    return total / os.sysconf("SC_CLK_TCK")


def _flower_app(work: Path, name: str) -> Path:
    app = work / f"{name}-app"
    app.mkdir()
    shutil.copy(REPO / "benchmarks" / "flower_secaggplus_app.py", app / "secaggplus_app.py")
    (app / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "flower-secaggplus-bench"\nversion = "0.1.0"\n'
        'description = "Flower SecAgg+ for benchmarks/flower_loopback.py"\n'
        'license = "Apache-2.0"\n'
        f'dependencies = ["flwr=={flwr.__version__}"]\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["."]\n\n'
        '[tool.flwr.app]\npublisher = "securediff-bench"\n\n'
        '[tool.flwr.app.components]\nserverapp = "secaggplus_app:server_app"\n'
        'clientapp = "secaggplus_app:client_app"\n\n'
        '[tool.flwr.app.config]\nout = ""\nrounds = 3\nnodes = 10\nlength = 1000\n'
        'num-shares = 7\nthreshold = 4\nclipping-range = 1.0\nstage-timeout = 300.0\n'
        'reply-poll = 0.0\n')
    return app


def run_one(name: str, *, work: Path, env: dict[str, str], keys: Path, n: int, rounds: int,
            length: int, degree: int, threshold: int, node_logs: list[Path],
            timeout: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    out = work / name
    if name.startswith("flower-secaggplus"):
        app, result = _flower_app(work, name), out.with_suffix(".json")
        poll = REPLY_POLL_SECONDS if name.endswith("-fastpoll") else 0.0
        run_config = (f"out='{result}' rounds={rounds} nodes={n} length={length} "
                      f"num-shares={degree + 1} threshold={threshold} clipping-range=1.0 "
                      f"stage-timeout={STAGE_TIMEOUT} reply-poll={poll}")
    else:
        protocol = "secagg" if name == "secagg" else "plain"
        params = json.dumps({"degree": degree, "threshold": threshold} if name == "secagg"
                            else {})
        app, result = REPO, out / "flower.json"
        run_config = (
            f"run-dir='{out}' roster='{keys / 'roster.json'}' "
            f"aggregator-key='{keys / 'aggregator.key'}' protocol='{protocol}' "
            f"protocol-params='{params}' rounds={rounds} vector-length={length} "
            f"min-nodes={n} stage-timeout={STAGE_TIMEOUT} connect-timeout=120.0 "
            f"insecure-seed={SEED} inputs='test-vectors'")
    offsets = {p: p.stat().st_size for p in node_logs}
    load_before = os.getloadavg()
    cpu_before = clientapp_cpu_seconds()
    started = time.perf_counter()
    submit = subprocess.run([str(BIN / "flwr"), "run", str(app), "local", "--run-config",
                             run_config], env=env, cwd=work, capture_output=True, text=True,
                            timeout=180)
    if submit.returncode != 0:
        raise RuntimeError(f"flwr run {name} failed:\n{submit.stdout}\n{submit.stderr}")
    deadline = time.monotonic() + timeout
    while not result.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: no {result.name} after {timeout:.0f} s")
        time.sleep(0.5)
    wall = time.perf_counter() - started
    time.sleep(1.0)  # the SuperNodes log their last message after the ServerApp wrote
    summary = json.loads(result.read_text())
    messages = messages_received(node_logs, offsets)
    clientapp_cpu = clientapp_cpu_seconds() - cpu_before
    seconds = [r["seconds"] for r in summary["rounds"]]
    per_round = exchanges_per_round(node_logs, offsets)
    return {
        "outcomes": [r.get("outcome") for r in summary["rounds"]],
        "round_seconds": seconds,
        # [stage, seconds from sending to the last reply] per exchange, as the ServerApp timed it
        "exchange_seconds": [r.get("exchange_seconds", []) for r in summary["rounds"]],
        "exchanges_per_round_each": list(per_round.values()),
        "submit_to_result_s": wall,
        # A SuperExec reaps a finished ClientApp process when it starts the next one, so
        # the last process of each node may count in the next run: one in ~20 or more.
        "clientapp_cpu_per_message_s": clientapp_cpu / messages if messages else None,
        **node_timings(node_logs, offsets),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }


def pooled(runs: list[dict]) -> dict:
    """Means over every run's rounds after its first (which installs the app)."""
    seconds = [s for r in runs for s in (r["round_seconds"][1:] or r["round_seconds"])]
    exchanges = [e for r in runs
                 for e in (r["exchanges_per_round_each"][1:] or r["exchanges_per_round_each"])]
    timed = [t for r in runs for rnd in (r["exchange_seconds"][1:] or r["exchange_seconds"])
             for _, t in rnd]
    by_stage: dict[str, list[float]] = {}
    for r in runs:
        for rnd in r["exchange_seconds"][1:] or r["exchange_seconds"]:
            for stage, t in rnd:
                by_stage.setdefault(stage, []).append(t)
    mean_s = sum(seconds) / len(seconds)
    mean_ex = sum(exchanges) / len(exchanges) if exchanges else float("nan")
    cpu = [r["clientapp_cpu_per_message_s"] for r in runs
           if r.get("clientapp_cpu_per_message_s") is not None]
    node = {k: [r[k] for r in runs if r.get(k) is not None] for k in ("node_handling_s", "node_idle_s")}
    return {"clientapp_cpu_per_message_s": sum(cpu) / len(cpu) if cpu else None,
            **{k: sum(v) / len(v) if v else None for k, v in node.items()},
            "seconds_per_round": mean_s, "exchanges_per_round": mean_ex,
            "seconds_per_exchange": mean_s / mean_ex, "rounds_pooled": len(seconds),
            # The same exchanges timed one by one by the ServerApp (no work between them)
            "timed_seconds_per_exchange": sum(timed) / len(timed) if timed else None,
            "timed_seconds_by_stage": {k: sum(v) / len(v) for k, v in by_stage.items()}}


def pass_order(protocols: list[str], repeats: int) -> list[tuple[int, str]]:
    """(pass, protocol) in run order: every other pass reversed."""
    return [(p, name) for p in range(repeats)
            for name in (protocols if p % 2 == 0 else protocols[::-1])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument("--repeats", type=int, default=2,
                        help="passes over the protocols, every other one reversed")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--keep", type=Path, help="keep the logs and run directories here")
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks/results/flower_loopback.json")
    args = parser.parse_args()
    n = args.nodes
    plan = plan_graph(n, SecAggProtocol().config)
    work = Path(tempfile.mkdtemp(prefix="flower-loopback-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    keys, logs, home = work / "keys", work / "logs", work / "flwr-home"
    clients = [f"client-{i:02d}" for i in range(n)]
    keygen(["aggregator", *clients], keys)
    make_roster(sorted(keys.glob("*.pub")), aggregator="aggregator", out=keys / "roster.json")
    logs.mkdir()
    link_port = free_port()
    write_flower_home(home, link_port)
    env = {**os.environ, "FLWR_HOME": str(home), "OMP_NUM_THREADS": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # Python's default: see the module docstring
    procs = Processes(env, logs)
    runs: dict[str, list[dict]] = {}
    started = time.perf_counter()
    when, load_avg_1m = time.strftime("%Y-%m-%dT%H:%M:%S"), os.getloadavg()[0]
    try:
        procs.start("superlink", superlink_command(BIN, link_port))
        for cid in clients:
            procs.start(cid, timestamped(supernode_command(BIN, link_port, cid, keys)))
        wait_for_port(link_port, 60)
        node_logs = [logs / f"{cid}.log" for cid in clients]
        for p, name in pass_order(args.protocols, args.repeats):
            print(f"== pass {p + 1}: {name}", flush=True)
            run = run_one(name, work=work / f"pass-{p}", env=env, keys=keys, n=n,
                          rounds=args.rounds, length=args.length,
                          degree=plan.degree, threshold=plan.threshold,
                          node_logs=node_logs, timeout=args.timeout)
            runs.setdefault(name, []).append({"pass": p, **run, **pooled([run])})
            r = runs[name][-1]
            print(f"{name}: {r['seconds_per_round']:.2f} s/round, "
                  f"{r['exchanges_per_round']:.1f} exchanges/round, "
                  f"{r['seconds_per_exchange']:.2f} s/exchange, a node handles a message in "
                  f"{r['node_handling_s']:.2f} s and idles {r['node_idle_s']:.2f} s (rounds "
                  f"{', '.join(f'{s:.1f}' for s in r['round_seconds'])} s)", flush=True)
    finally:
        procs.stop_all()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    data = {
        "benchmark": "flower_loopback", "when": when, "load_avg_1m": load_avg_1m,
        "cpus": os.cpu_count(),
        "complete": all(len(runs.get(p, [])) == args.repeats for p in args.protocols),
        "repeats": args.repeats, "order": [f"{p + 1}:{name}" for p, name in
                                           pass_order(args.protocols, args.repeats)],
        "bytecode_cache": "written by the SuperNodes' processes (Python's default)",
        "seconds": time.perf_counter() - started, "flwr": flwr.__version__,
        "nodes": n, "rounds": args.rounds, "length": args.length,
        "degree": plan.degree, "threshold": plan.threshold,
        "flower_num_shares": plan.degree + 1,
        "supernode": "flower-supernode defaults: --isolation subprocess (a flwr-clientapp "
                     "process per message), 3 s sleep after an empty pull",
        "superexec_poll_interval_env": os.environ.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL"),
        "reply_poll_seconds": {"secagg": REPLY_POLL_SECONDS, "plain": REPLY_POLL_SECONDS,
                               "flower-secaggplus": "Grid.send_and_receive: 3 s after each pull",
                               "flower-secaggplus-fastpoll": REPLY_POLL_SECONDS},
        "rows": [{"protocol": name, **pooled(r), "runs": r} for name, r in runs.items()],
        "ratios": {},
        "ratios_by_pass": {},
    }
    results = {name: pooled(r) for name, r in runs.items()}
    for other in ("flower-secaggplus", "flower-secaggplus-fastpoll", "plain"):
        if "secagg" in results and other in results:
            ours, theirs = results["secagg"], results[other]
            key = other.replace("-", "_")
            data["ratios"][f"{key}_over_secagg_per_exchange"] = (
                theirs["seconds_per_exchange"] / ours["seconds_per_exchange"])
            data["ratios"][f"{key}_over_secagg_per_round"] = (
                theirs["seconds_per_round"] / ours["seconds_per_round"])
            if ours["timed_seconds_per_exchange"] and theirs["timed_seconds_per_exchange"]:
                data["ratios"][f"{key}_over_secagg_per_timed_exchange"] = (
                    theirs["timed_seconds_per_exchange"] / ours["timed_seconds_per_exchange"])
            data["ratios_by_pass"][f"{key}_over_secagg_per_exchange"] = [
                t["seconds_per_exchange"] / o["seconds_per_exchange"]
                for o, t in zip(runs["secagg"], runs[other], strict=False)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
