"""`securediff export RUN DIR`: what may leave the machine, and nothing else.

An allow-list, not a deny-list: a file a later version adds to run directories
stays behind until someone decides it may leave. What leaves: the shared
denoiser (extracted from the round checkpoint, which also holds every personal
model), the privacy statement, the transcript and its roster, the metrics, the
samples, and a report built afresh from the verified run. `EXPORT.json` lists
each file with its digest and the guarantee the statement gives it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securediff.errors import ConfigError, RunDirectoryError
from securediff.reopen import check_finished
from securediff.storage import atomic_write_bytes, atomic_write_json, load_tensors, read_json
from securediff.strategy_rules import StrategyRules

SHARED_MODEL = "shared_model.safetensors"
MANIFEST_NAME = "EXPORT.json"
STATE = "checkpoints/state.safetensors"
# Copied as they are: name -> (what it is, the privacy statement's artefact that
# covers it; None where no DP claim is needed).
COPIED: dict[str, tuple[str, str | None]] = {
    "privacy_statement.md": ("the privacy statement, for people", None),
    "privacy_statement.json": ("the privacy statement, for programs", None),
    "transcript.jsonl": ("the protocol transcript (verify it against the roster)", "transcript"),
    "roster.json": ("the pinned public keys the transcript is verified against", None),
    "metrics.json": ("per-client metrics and round logs", None),
    "samples.png": ("samples drawn when the run finished", "synthetic samples of a client"),
    "sampled.png": ("samples drawn by securediff sample", "synthetic samples of a client"),
}
# Why the files a run holds stay behind (anything else: not on the allow-list).
KEPT_BACK = {
    "checkpoints/noised-data.safetensors": "the once-noised data x~ of every client: it never "
                                           "leaves the machine (the statement says who can read it)",
    STATE: "every client's personal denoiser and optimizer state (the shared model is "
           f"extracted from it as {SHARED_MODEL})",
    "checkpoints/progress.json": "checkpoint bookkeeping of the run's rounds",
    "answers.jsonl": "the clients' answers log (which party answered which round)",
    "partition.json": "which records of the data set each client holds (member indices)",
    "ledger.json": "per-client privacy ledgers: the statement carries their claim",
    "config.toml": "local paths and settings (report.html shows the configuration)",
    "manifest.json": "host versions, paths and (in test mode) seeds",
    "report.html": "rebuilt from the verified run instead of copied",
    "audit/": "the audit's attack results (report.html shows its verdict and ROC)",
    "checkpoints/": "round checkpoints hold personal models and training state",
}
NOT_ALLOWED = "not on the export allow-list"


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    copied: list[dict[str, Any]]   # name, bytes, sha256, what, guarantee
    left_out: list[tuple[str, str]]  # run-relative path, why


def _guarantee(statement: dict[str, Any], artefact: str | None) -> str | None:
    for row in statement.get("rows", []):
        if row.get("artefact") == artefact:
            return row.get("guarantee")
    return None


def _shared_model(run_dir: Path, manifest: dict[str, Any], rules: StrategyRules) -> bytes | None:
    """The shared denoiser's weights from the last round checkpoint, or None if the
    strategy has no shared model that may leave."""
    if not rules.shares_model:
        return None
    from safetensors.torch import save as st_save

    tensors = load_tensors(run_dir / STATE, expected_sha256=manifest["files"].get(STATE))
    prefix = "model.global."
    # Layers the strategy keeps personal were never shared, even in the global copy.
    shared = {k[len(prefix):]: v for k, v in tensors.items()
              if k.startswith(prefix) and not k[len(prefix):].startswith(rules.personal_layers)}
    if not shared:
        return None
    return st_save(shared, metadata={"securediff": json.dumps({"strategy": rules.name,
                                                               "t0": manifest.get("t0")})})


def _check_target(out_dir: Path, run_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir} exists and is not an empty directory; choose a new one")
    if out_dir.resolve().is_relative_to(run_dir.resolve()):
        raise ConfigError(f"{out_dir} is inside the run directory; export elsewhere")


def export_run(run_dir: Path, out_dir: Path) -> ExportResult:
    """Copy what may leave a finished, verified run into `out_dir` (new or empty).
    Written into a staging directory renamed at the end: `out_dir` is all or nothing."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    _check_target(out_dir, run_dir)
    check_finished(run_dir, also=tuple(COPIED))
    manifest = read_json(run_dir / "manifest.json")
    statement = read_json(run_dir / "privacy_statement.json")
    files: dict[str, tuple[bytes, str, str | None]] = {}
    weights = _shared_model(run_dir, manifest, _strategy_rules(run_dir))
    if weights is not None:
        files[SHARED_MODEL] = (weights, "shared denoiser weights (safetensors)",
                               _guarantee(statement, "shared denoiser and its updates"))
    for name, (what, artefact) in COPIED.items():
        if (run_dir / name).is_file():
            files[name] = ((run_dir / name).read_bytes(), what, _guarantee(statement, artefact))
    from securediff.run_report import build_report

    files["report.html"] = (build_report(run_dir).encode(), "report built from the verified run",
                            None)
    left_out = [(name, _why_kept(name)) for name in _run_files(run_dir) if name not in COPIED]
    copied = [{"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
               "what": what, "guarantee": guarantee}
              for name, (data, what, guarantee) in files.items()]
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for name, (data, _, _) in files.items():
            atomic_write_bytes(staging / name, data)
        atomic_write_json(staging / MANIFEST_NAME, {
            "run": run_dir.name, "private": statement.get("private"),
            "headline": statement.get("headline"), "files": copied})
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(staging, out_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RunDirectoryError(f"cannot export into {out_dir}: {exc}") from None
    return ExportResult(out_dir=out_dir, copied=copied, left_out=left_out)


def _strategy_rules(run_dir: Path) -> StrategyRules:
    from securediff.config import from_dict, load_toml

    return from_dict(load_toml(run_dir / "config.toml")).federation.strategy_rules


def _why_kept(name: str) -> str:
    folder = name.split("/", 1)[0] + "/"
    return KEPT_BACK.get(name) or KEPT_BACK.get(folder) or NOT_ALLOWED


def _run_files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
