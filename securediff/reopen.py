"""Reopen a finished run directory: sample from its models, re-evaluate it."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from securediff.config import from_dict, load_toml
from securediff.errors import CheckpointError, ConfigError
from securediff.federation.evaluate import evaluate_clients, sample_client
from securediff.federation.runner import FederatedRun
from securediff.federation.setup import set_up_run
from securediff.figures import client_samples_figure, write_figure
from securediff.locks import writing
from securediff.storage import INCOMPLETE_SUFFIX, RunDirectory, read_json, sha256_file


def check_finished(run_dir: Path, *, also: tuple[str, ...] = ()) -> None:
    """Refuse what is not a finished run whose manifest verifies (and, for the
    files named in `also`, whose digests match where the manifest records one)."""
    run_dir = Path(run_dir)
    if run_dir.name.endswith(INCOMPLETE_SUFFIX):
        raise CheckpointError(f"{run_dir} is unfinished; continue it with `securediff train --resume {run_dir}`")
    if not (run_dir / "config.toml").is_file():
        raise CheckpointError(f"{run_dir} is not a securediff run directory (no config.toml)")
    check_manifest(run_dir, also=also)


def open_finished(run_dir: Path, *, device: str = "auto") -> FederatedRun:
    run_dir = Path(run_dir)
    check_finished(run_dir)
    config = from_dict(load_toml(run_dir / "config.toml"))
    config = config.replace(run={"device": device, "out_dir": str(run_dir.parent)})
    run = FederatedRun(set_up_run(config), RunDirectory(run_dir, run_dir))
    run.set_up(resume=True)
    return run


# What a finished run's claims rest on; later outputs (audit/, sampled.png, a
# re-evaluation) may be added beside them.
_PINNED = ("config.toml", "partition.json", "ledger.json", "roster.json", "transcript.jsonl")


def check_manifest(run_dir: Path, *, also: tuple[str, ...] = ()) -> None:
    """Refuse a finished run whose pinned files (and those named in `also`) differ
    from the SHA-256 digests its manifest recorded when it finished (edited,
    truncated or missing)."""
    try:
        files = read_json(run_dir / "manifest.json")["files"]
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{run_dir}/manifest.json records no file digests") from exc
    for name, digest in sorted(files.items()):
        if not (name in _PINNED or name in also or name.startswith("checkpoints/")):
            continue
        path = run_dir / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (manifest.json records it)")
        if sha256_file(path) != digest:
            raise CheckpointError(
                f"{path} was changed after the run finished: its SHA-256 differs from "
                "manifest.json")


def sample_run(run_dir: Path, *, client: str | None, per_class: int, out: Path | None,
               device: str = "auto") -> tuple[Path, dict[str, Any]]:
    run = open_finished(run_dir, device=device)
    clients = run.state.clients
    if client is not None:
        clients = [c for c in clients if c.client_id == client]
        if not clients:
            raise ConfigError(f"no client {client!r} in {run_dir}; known: "
                              + ", ".join(c.client_id for c in run.state.clients))
    gen = run.source.child("sample-command").torch_generator()
    grids = {}
    for c in clients:
        x, _ = sample_client(run.state.strategy, c, run.setup, per_class=per_class, generator=gen, device=run.device)
        grids[c.client_id] = x  # class-major: per_class samples of class 0, then 1, ...
    out = Path(out) if out is not None else Path(run_dir) / "sampled.png"
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give the PNG file to write")
    statement = read_json(Path(run_dir) / "privacy_statement.json")
    figure = client_samples_figure(grids, per_class=per_class, class_names=run.setup.dataset.class_names,
                                   statement=statement)
    inside = out.resolve().parent == Path(run_dir).resolve()
    with writing(run_dir) if inside else nullcontext():  # one writer of a run at a time
        write_figure(out, figure)
    return out, statement


def evaluate_run(run_dir: Path, *, device: str = "auto") -> dict[str, Any]:
    run = open_finished(run_dir, device=device)
    metrics, summary, _ = evaluate_clients(
        run.state.strategy, run.state.clients, run.setup, device=run.device, generator=run.source.child("evaluate-command").torch_generator(),
    )
    clients = []
    for c, m in zip(run.state.clients, metrics, strict=True):
        row = m.to_dict()
        row["members"] = c.num_members
        eps = c.ledger.epsilon("shared")
        row["epsilon_shared"] = eps if eps != float("inf") else None
        clients.append(row)
    eps_max = max((c["epsilon_shared"] for c in clients if c["epsilon_shared"] is not None), default=None)
    summary = {**summary, "strategy": run.cfg.federation.strategy, "protocol": run.cfg.federation.protocol,
               "dataset": run.cfg.data.dataset, "num_clients": len(clients), "private": run.cfg.private,
               "epsilon_shared_max": eps_max}
    return {"summary": summary, "clients": clients}
