"""The manifest of a Flower training run: what the aggregator released, pinned.

Written once, at the end of the run, next to the shared model as
`flower-manifest.json` (atomically: temporary file, fsync, rename; a crash
leaves the old state, never half a manifest). It names the run, the rounds the
transcript closed, the protocol, the final shared model's SHA-256 and the
transcript with the digest of its last `round_close` record, so whoever holds
the shared model can check it is the one this run ended with and find the
co-signed rounds that produced it (`securediff transcript verify RUN-DIR`).

The manifest is the aggregator's word: the survivors' co-signatures pin each
round's aggregate digest in the transcript, not the model file. Its `files`
map lets a node or reviewer detect any later change to what it names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from protocols.messages import sha256_hex
from securediff.errors import CheckpointError
from securediff.storage import atomic_write_json, read_json, sha256_file

MANIFEST_NAME = "flower-manifest.json"
MANIFEST_FORMAT = 1
SHARED_MODEL_NAME = "shared-model.safetensors"
TRANSCRIPT_NAME = "transcript.jsonl"
# What the run directory holds at the end, digested into the manifest when present.
_PINNED = ("config.toml", "roster.json", TRANSCRIPT_NAME, SHARED_MODEL_NAME,
           "aggregates.safetensors", "flower.json")


def round_closes(transcript: Path) -> list[tuple[int, str]]:
    """(round, SHA-256 of the line) of each `round_close` record, in file order: the
    digest by which the parties' chains refer to it."""
    closes = []
    with open(transcript, "rb") as fh:
        for raw in fh:
            body = raw.rstrip(b"\n")
            try:
                rec = json.loads(body)
            except ValueError:
                raise CheckpointError(f"{transcript}: a line is not JSON") from None
            if isinstance(rec, dict) and rec.get("kind") == "round_close":
                closes.append((int(rec["round"]), sha256_hex(body)))
    return closes


def write_manifest(run_dir: Path, *, run_id: str | None, protocol: str, mode: str,
                   rounds: Sequence[Mapping[str, Any]], planned_rounds: int) -> dict[str, Any]:
    """Pin the end of the run. `rounds`: the per-round logs of flower.json."""
    run_dir = Path(run_dir)
    transcript = run_dir / TRANSCRIPT_NAME
    closes = round_closes(transcript)
    aggregated = [int(r["round"]) for r in rounds if r.get("outcome") == "aggregated"]
    shared = run_dir / SHARED_MODEL_NAME
    final_sha = next((r["shared_model_sha256"] for r in reversed(rounds)
                      if r.get("shared_model_sha256")), None)
    if final_sha is not None and sha256_file(shared) != final_sha:
        # The file must be the model of the last aggregated round, not a later write.
        raise CheckpointError(f"{shared} is not the shared model of the run's last round")
    manifest = {
        "format": MANIFEST_FORMAT, "kind": "flower-training-run", "run_id": run_id,
        "mode": mode, "protocol": protocol, "planned_rounds": planned_rounds,
        "rounds_closed": len(closes), "rounds_aggregated": aggregated,
        "shared_model": None if final_sha is None else {
            "path": SHARED_MODEL_NAME, "sha256": final_sha, "round": aggregated[-1]},
        "transcript": {"path": TRANSCRIPT_NAME,
                       "last_round_close": None if not closes else
                       {"round": closes[-1][0], "sha256": closes[-1][1]}},
        "files": {name: sha256_file(run_dir / name) for name in _PINNED
                  if (run_dir / name).is_file()},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(run_dir / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(path: Path) -> dict[str, Any]:
    """A Flower run's manifest (the file, or the run directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("kind") != "flower-training-run":
        raise CheckpointError(f"{path} is not the manifest of a Flower training run")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{path}: manifest format {manifest.get('format')!r}, "
                              f"this securediff reads {MANIFEST_FORMAT}")
    return manifest
