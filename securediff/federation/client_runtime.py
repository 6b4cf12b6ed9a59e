"""What a client does to its own data and updates, written once for both ways a
client runs: simulated inside `securediff train` (runner, start, rounds) and as
a Flower node (flower/trainer.py). Those two keep the orchestration and the
files; the privacy logic is here, so a node charges and clips exactly what the
in-process runner does for the same client."""

from __future__ import annotations

import numpy as np


def members_id(client_id: str) -> str:
    """The data id of a client's member records in its ledger (noised once, ever)."""
    return f"{client_id}/members"


def clip_update(update: np.ndarray, bound: float) -> np.ndarray:
    """A shared update scaled to L2 norm `bound` where it is longer
    (federation.update_clip; 0 leaves it as it is)."""
    norm = float(np.linalg.norm(update))
    if bound > 0 and norm > bound:
        return update * (bound / norm)
    return update
