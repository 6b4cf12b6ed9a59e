"""A real Flower deployment on 127.0.0.1: one flower-superlink, four flower-supernode
processes, `flwr run` of securediff's ServerApp/ClientApp, two secagg rounds in the
insecure deterministic test mode; one SuperNode is killed during round 1.

Checked: the run completes; its transcript passes `securediff transcript verify`;
each round's aggregate equals the in-process simulation's for the same inputs and
the same dropout, within the protocol's quantization bound. Every process is
stopped at the end, also when the test fails (own process groups, killed in
`finally`). Prints the wall time of the Flower run and of the simulation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from cli.app import app
from protocols import (
    Identities,
    TranscriptWriter,
    check_against_plain,
    make_protocol,
    run_round,
)
from protocols.driver import RoundResult
from securediff.flower.inputs import seeded_vector
from securediff.flower.keys import keygen, make_roster
from securediff.flower.loopback import (
    Processes,
    free_port,
    superlink_command,
    supernode_command,
    write_flower_home,
)

pytestmark = pytest.mark.slow(seconds=150)  # rough file total, CI machine

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLIENTS = [f"client-{i:02d}" for i in range(4)]
SEED, LENGTH, ROUNDS, STAGE_TIMEOUT = 11, 1000, 2, 30.0
VICTIM, KILL_ROUND, KILL_AFTER = "client-03", 1, "AdvertiseKeys"


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines(keepends=True)
            if line.endswith(b"\n")]


def _wait(what: str, check, deadline: float, logs: Path):
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                      for p in sorted(logs.glob("*.log")))
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def test_flower_secagg_run_matches_simulation(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keygen(["aggregator", *CLIENTS], keys)
    make_roster(sorted(keys.glob("*.pub")), aggregator="aggregator",
                         out=keys / "roster.json")
    logs = tmp_path / "logs"
    logs.mkdir()
    home = tmp_path / "flwr-home"
    link_port = free_port()
    write_flower_home(home, link_port)
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    procs = Processes(env, logs)
    try:
        procs.start("superlink", superlink_command(BIN, link_port))
        for cid in CLIENTS:
            procs.start(cid, supernode_command(BIN, link_port, cid, keys))
        run_config = (
            f"run-dir='{run_dir}' roster='{keys / 'roster.json'}' "
            f"aggregator-key='{keys / 'aggregator.key'}' protocol='secagg' rounds={ROUNDS} "
            f"vector-length={LENGTH} min-nodes={len(CLIENTS)} stage-timeout={STAGE_TIMEOUT} "
            f"connect-timeout=90.0 insecure-seed={SEED} inputs='test-vectors' "
            f"store-payloads=true")
        started = time.perf_counter()
        deadline = time.monotonic() + 400
        submit = subprocess.run(
            [str(BIN / "flwr"), "run", str(REPO), "local", "--run-config", run_config],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert submit.returncode == 0, submit.stdout + submit.stderr
        transcript = run_dir / "transcript.jsonl"

        def victim_spoke() -> bool:
            return any(r["kind"] == "message" and r["sender"] == VICTIM
                       and r["round"] == KILL_ROUND and r["stage"] == KILL_AFTER
                       for r in _records(transcript))

        _wait(f"{VICTIM}'s {KILL_AFTER} in round {KILL_ROUND}", victim_spoke, deadline, logs)
        procs.kill(VICTIM)  # the SuperNode disappears mid-round
        _wait("the run's flower.json", lambda: (run_dir / "flower.json").exists(), deadline,
              logs)
        flower_seconds = time.perf_counter() - started
    finally:
        procs.stop_all()

    summary = json.loads((run_dir / "flower.json").read_text())
    assert [r["outcome"] for r in summary["rounds"]] == ["aggregated"] * ROUNDS, summary
    assert summary["rounds"][0]["dropped"] == {}
    assert list(summary["rounds"][KILL_ROUND]["dropped"]) == [VICTIM]

    verify = CliRunner().invoke(app, ["transcript", "verify", str(run_dir), "--json"])
    assert verify.exit_code == 0, verify.output
    assert json.loads(verify.output)["rounds"] == ROUNDS

    # The in-process simulation of the same rounds: same inputs, same dropout stage.
    aggregates = load_file(str(run_dir / "aggregates.safetensors"))
    identities = Identities.generate(CLIENTS)
    protocol = make_protocol("secagg").bind(identities)
    started = time.perf_counter()
    simulated_transcript = TranscriptWriter.open(tmp_path / "simulated.jsonl",
                                                 identities=identities, protocol=protocol)
    for r, log in enumerate(summary["rounds"]):
        inputs = {c: seeded_vector(SEED, c, r, LENGTH) for c in CLIENTS}
        dropouts = {c: why.split(" ")[3] for c, why in log["dropped"].items()}
        simulated = run_round(protocol, round_index=r, inputs=inputs, identities=identities,
                              transcript=simulated_transcript, dropouts=dropouts)
        flower = RoundResult(weighted_sum=aggregates[f"round-{r}"],
                             total_weight=log["total_weight"], survivors=tuple(log["survivors"]),
                             dropped=tuple(log["dropped"]), contributors=tuple(log["contributors"]),
                             bytes_up=0, bytes_down=0, stats={})
        assert flower.contributors == simulated.contributors
        assert flower.total_weight == pytest.approx(simulated.total_weight, rel=1e-12)
        flower_check = check_against_plain(protocol, inputs, flower)
        assert flower_check["ok"], flower_check
        assert check_against_plain(protocol, inputs, simulated)["ok"]
        gap = float(np.abs(flower.weighted_sum - simulated.weighted_sum).max())
        assert gap <= 2 * flower_check["tolerance"], (gap, flower_check["tolerance"])
    simulation_seconds = time.perf_counter() - started
    simulated_transcript.close()
    print(f"\nflower run (submit to results, {ROUNDS} secagg rounds, 4 SuperNodes, one killed, "
          f"stage timeout {STAGE_TIMEOUT:.0f} s): {flower_seconds:.1f} s wall; server-side "
          f"{summary['seconds']:.1f} s; in-process simulation of the same rounds: "
          f"{simulation_seconds:.3f} s")
