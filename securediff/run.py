"""`train` as a library call: set up, run the rounds, evaluate, write the run directory."""

from __future__ import annotations

import json
import math
import platform
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import securediff
from securediff.config import Config, from_dict, load_toml
from securediff.errors import (
    CheckpointError,
    ConfigError,
    RunDirectoryError,
    RunInterrupted,
    describe_os_error,
)
from securediff.federation.evaluate import evaluate_clients
from securediff.federation.progress_file import roster_digests
from securediff.federation.public import public_provenance
from securediff.federation.runner import FederatedRun, Progress, resolve_device
from securediff.federation.setup import RunSetup, set_up_run
from securediff.figures import run_samples_figure, write_figure
from securediff.locks import LOCK_NAME
from securediff.statement import privacy_statement, statement_markdown
from securediff.storage import RunDirectory, atomic_write_json, atomic_write_text, sha256_file

RUN_FORMAT = 1
PINNED_AT_START = ("config.toml", "partition.json")


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    clients: list[dict[str, Any]]
    statement: dict[str, Any]
    seconds: float
    peak_rss_mb: float


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import numpy

    # Opacus' version from its metadata: importing it (and scipy.stats with it) costs
    # a second in a run that never uses it.
    return {"securediff": securediff.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "opacus": version("opacus"), "numpy": numpy.__version__}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _write_start_files(run_dir: RunDirectory, setup: RunSetup) -> None:
    cfg = setup.config
    atomic_write_text(run_dir.file("config.toml"), cfg.to_toml())
    atomic_write_text(run_dir.file("partition.json"), setup.partition.to_json())
    atomic_write_json(run_dir.file("manifest.json"), {
        "format": RUN_FORMAT, "versions": _versions(), "git_revision": _git_revision(),
        "private": cfg.private,
        "mode": "private" if cfg.private else "NOT PRIVATE: insecure deterministic test mode",
        # Seeds are recorded only in the insecure test mode; a private run's keys are never written.
        "seeds": {"insecure_seed": cfg.run.insecure_seed, "partition_seed": cfg.data.partition_seed},
        "t0": setup.t0, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # Which public data pretrained the models, and how it was made (None: no public data).
        "public": public_provenance(setup),
        # What a resume must find unchanged: it recomputes the set-up (t0, budget, who
        # holds which record) from these, so an edit would change what is computed
        # and claimed mid-run.
        "pinned": {name: sha256_file(run_dir.file(name)) for name in PINNED_AT_START},
    })


def _check_pinned(run_dir: RunDirectory) -> None:
    """Refuse to resume a run whose start files changed since it started."""
    try:
        pinned = json.loads(run_dir.file("manifest.json").read_text(encoding="utf-8")).get(
            "pinned", {})
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"cannot read {run_dir.file('manifest.json')}: {exc}") from None
    for name in PINNED_AT_START:
        path = run_dir.file(name)
        if name not in pinned:
            continue  # a run started before pins were recorded
        if not path.is_file() or sha256_file(path) != pinned[name]:
            raise CheckpointError(
                f"{path} differs from the one the run started with (manifest.json pins its "
                "SHA-256): a resume would compute and claim something else; restore it")


def _client_level_claim(run: FederatedRun) -> dict | None:
    """The client-level row's numbers: the plan, and the largest claim over clients."""
    plan = run.budget.client_level
    if plan is None:
        return None
    claims = [c.ledger.summary()["artefacts"].get("shared", {}).get("client_level")
              for c in run.state.clients]
    worst = max((c for c in claims if c), key=lambda c: c["epsilon"], default=None)
    return {"mechanism": plan.mechanism, "clip": plan.clip, "noise_multiplier": plan.noise_multiplier,
            "sample_rate": plan.sample_rate, "rounds": plan.rounds,
            "epsilon": worst["epsilon"] if worst else math.inf,
            "accountant": worst["accountant"] if worst else run.cfg.privacy.accountant}


def _finish(run: FederatedRun, started: float) -> RunResult:
    setup, cfg, state = run.setup, run.cfg, run.state
    run.progress("evaluate", {})
    metrics, summary, grids = evaluate_clients(
        state.strategy, state.clients, setup, device=run.device,
        generator=run.source.child("sampling").torch_generator(), progress=run.progress,
    )
    per_client = []
    for client, m in zip(state.clients, metrics, strict=True):
        row = m.to_dict()
        row["epsilon_shared"] = _finite(client.ledger.epsilon("shared"))
        row["epsilon_personal"] = _finite(client.ledger.epsilon("personal"))
        row["members"] = client.num_members
        per_client.append(row)
    shared_eps = max((c.ledger.epsilon("shared") for c in state.clients), default=math.inf)
    personal_eps = max((c.ledger.epsilon("personal") for c in state.clients), default=math.inf)
    from protocols import make_protocol

    protocol = make_protocol(cfg.federation.protocol, **cfg.protocol)
    statement = privacy_statement(
        strategy=cfg.federation.strategy, protocol_secure=protocol.secure, protocol_name=protocol.name,
        private=cfg.private, delta=cfg.privacy.delta, t0=setup.t0, clip_norm=cfg.privacy.clip_norm,
        forward_exact=setup.forward_epsilon_exact, forward_classic=setup.forward_epsilon_classic,
        shared_epsilon=shared_eps, personal_epsilon=personal_eps, accountant=cfg.privacy.accountant,
        labels=cfg.privacy.labels, label_epsilon=cfg.privacy.label_epsilon,
        adaptive_quantile=cfg.privacy.clip_quantile if cfg.privacy.clipping == "adaptive" else None,
        hybrid_forward=cfg.federation.hybrid_forward, protocol_params=protocol.params,
        client_level=_client_level_claim(run),
        public=public_provenance(setup),
        stats_release=None if run.stats_release is None else run.stats_release.record,
        release_use=state.strategy.release_use(),
    )
    # Drawn after the statement: its caption states the guarantee the statement claims.
    write_figure(run.run_dir.file("samples.png"), run_samples_figure(
        grids, class_names=setup.dataset.class_names, statement=statement))
    seconds = time.perf_counter() - started
    summary = {**summary, "strategy": cfg.federation.strategy, "protocol": cfg.federation.protocol,
               "dataset": cfg.data.dataset, "num_clients": len(state.clients), "t0": setup.t0,
               "epsilon_shared_max": _finite(shared_eps), "accountant": cfg.privacy.accountant,
               "delta": cfg.privacy.delta, "private": cfg.private, "seconds": seconds,
               "peak_rss_mb": _peak_rss_mb(), "rounds": state.round_logs,
               # What a reviewer pins to verify the transcript (one roster per session).
               "roster_sha256": roster_digests(run.run_dir.file("roster.json"))}
    atomic_write_json(run.run_dir.file("metrics.json"), {"summary": summary, "clients": per_client})
    atomic_write_json(run.run_dir.file("privacy_statement.json"), statement)
    atomic_write_text(run.run_dir.file("privacy_statement.md"), statement_markdown(statement))
    manifest_path = run.run_dir.file("manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest["files"] = {
        str(p.relative_to(run.run_dir.path)): sha256_file(p)
        for p in sorted(run.run_dir.path.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", LOCK_NAME)
    }
    atomic_write_json(manifest_path, manifest)
    final = run.run_dir.finalize()
    return RunResult(run_dir=final, summary=summary, clients=per_client, statement=statement,
                     seconds=seconds, peak_rss_mb=_peak_rss_mb())


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def train(config: Config, *, progress: Progress | None = None) -> RunResult:
    """A new run. Nothing is written until the config and the data have been checked."""
    started = time.perf_counter()
    setup = set_up_run(config)
    resolve_device(config.run.device)  # a device this host lacks: refused before any file
    run_dir = RunDirectory.create(Path(config.run.out_dir), config.run.name)
    try:
        run = _start(setup, run_dir, progress)
    except BaseException:
        run_dir.discard()  # nothing worth resuming yet: leave no half-written directory
        raise
    try:
        with _resumable(run_dir):
            run.train()
            return _finish(run, started)
    finally:
        run_dir.release()  # the lock lives as long as this command writes the run


@contextmanager
def _resumable(run_dir: RunDirectory) -> Iterator[None]:
    """A run past its first checkpoint that stops (Ctrl-C, a full disk, a read-only
    file system) keeps its directory; the error says how to go on."""
    hint = f"resume with: securediff train --resume {run_dir.path}"
    try:
        yield
    except KeyboardInterrupt:
        raise RunInterrupted(f"interrupted; the run is kept, {hint}", by_user=True) from None
    except RunDirectoryError:
        raise
    except OSError as exc:
        raise RunInterrupted(f"{describe_os_error(exc)}; the run is kept up to its last "
                             f"complete round; once that is fixed, {hint}") from None


def _start(setup: RunSetup, run_dir: RunDirectory, progress: Progress | None) -> FederatedRun:
    """Start files, noise-once and the first checkpoint of a run that has none yet."""
    run = FederatedRun(setup, run_dir, progress=progress)
    _write_start_files(run_dir, setup)
    run.set_up(resume=False)
    if run.setup is not setup:  # adaptive clipping chose C and t0: record what the run uses
        _write_start_files(run_dir, run.setup)
    return run


# What a session writes once updates may have left a client. Without any of them and
# without a first checkpoint, nothing was released: a killed start can begin again.
_RELEASE_TRACES = ("roster.json", "transcript.jsonl", "answers.jsonl")
_SETUP_EVENTS = {"forward_noise", "quantile_count", "randomized_response"}


def _never_checkpointed(run_dir: RunDirectory) -> bool:
    if run_dir.file("checkpoints", "progress.json").exists():
        return False
    traces = [name for name in _RELEASE_TRACES if run_dir.file(name).exists()]
    if traces:
        raise CheckpointError(f"{run_dir.file('checkpoints', 'progress.json')} is missing but "
                              f"{traces[0]} shows that rounds ran: refusing to resume")
    return True


# What a resume may change: where and how fast the work runs, never what is
# computed or claimed (the results do not depend on them beyond float rounding).
RESUME_OVERRIDES = ("device", "workers")


def _pinned_config(run_dir: RunDirectory, how: dict[str, Any]) -> Config:
    """The run's own config, with only `RESUME_OVERRIDES` of [run] replaced."""
    unknown = set(how) - set(RESUME_OVERRIDES)
    if unknown:
        raise ConfigError(f"a resume may change only run.{' and run.'.join(RESUME_OVERRIDES)}, "
                          f"not run.{sorted(unknown)[0]}")
    return from_dict(load_toml(run_dir.file("config.toml"))).replace(
        run={"out_dir": str(run_dir.path.parent), **how})


def _restart(run_dir: RunDirectory, config: Config, progress: Progress | None) -> FederatedRun:
    """Begin a run killed before its first checkpoint again, in its own directory.

    Its noised data (if the kill came after they were written) never reached any
    aggregator; they are deleted with the partial ledger before the start noises
    afresh, so the directory never holds two noisings of one record. The start
    files are those the run was started with (their pins were checked)."""
    setup = set_up_run(config)
    shutil.rmtree(run_dir.file("checkpoints"), ignore_errors=True)
    run_dir.file("ledger.json").unlink(missing_ok=True)
    if progress:
        progress("restart", {"reason": "killed before its first checkpoint"})
    return _start(setup, run_dir, progress)


def resume(path: Path, *, progress: Progress | None = None, how: dict[str, Any] | None = None
           ) -> RunResult:
    """Continue an unfinished run from its last complete round (no re-noising).

    `how` may set `RESUME_OVERRIDES` of [run] (the device, the workers): they change
    where the work runs, not what is computed or claimed. Everything else comes
    from the pinned config."""
    started = time.perf_counter()
    run_dir = RunDirectory.open_incomplete(Path(path))
    try:
        _check_pinned(run_dir)
        config = _pinned_config(run_dir, how or {})
        resolve_device(config.run.device)
        with _resumable(run_dir):
            if _never_checkpointed(run_dir):
                run = _restart(run_dir, config, progress)
            else:
                run = FederatedRun(set_up_run(config), run_dir, progress=progress)
                run.set_up(resume=True)
            run.train()
            return _finish(run, started)
    finally:
        run_dir.release()


def load_config(path: Path | None, overrides: dict[str, dict[str, Any]], *, base: Config | None = None) -> Config:
    merged: dict[str, Any] = load_toml(path) if path is not None else {}
    for section, values in overrides.items():
        current = merged.setdefault(section, {})
        if isinstance(current, dict):
            current.update(values)
    return from_dict(merged, base=base)
