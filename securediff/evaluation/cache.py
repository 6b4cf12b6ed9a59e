"""Where the evaluator lives: a per-user cache outside every run directory.

The evaluator (the classifier that scores synthetic samples) is trained WITHOUT
differential privacy on the pooled raw records of every client. It is a
measuring instrument for this machine only: it is kept out of run directories,
which are made to be shared, and every privacy statement names it and where it
lies. `SECUREDIFF_CACHE_DIR` moves it (the tests point it at a temporary
directory); otherwise `$XDG_CACHE_HOME/securediff`, by default
`~/.cache/securediff`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def evaluator_cache_dir() -> Path:
    explicit = os.environ.get("SECUREDIFF_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "securediff"


def evaluator_cache_key(dataset: str, images: np.ndarray, labels: np.ndarray, *, epochs: int) -> str:
    """One file per pool and setting: two runs that would train different
    evaluators never meet in one cache entry."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return f"{dataset}-e{epochs}-{h.hexdigest()[:16]}"
