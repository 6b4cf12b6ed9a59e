"""Where a node's input for a round comes from.

`seeded_vectors` is the insecure deterministic test mode's source: each client's
vector and weight follow from the recorded seed, its id and the round, so a
Flower run and an in-process simulation aggregate exactly the same inputs.
"""

from __future__ import annotations

import hashlib

import numpy as np

from protocols.stages import ClientInput, RoundSetup

_DOMAIN = b"securediff/flower/test-vectors/v1\n"


def seeded_vector(seed: int, client_id: str, round_index: int, length: int,
                dtype: str = "float32") -> ClientInput:
    """A reproducible update-like vector (entries ~N(0, 0.1)) and a weight in 10..59."""
    digest = hashlib.sha256(_DOMAIN + f"{seed}/{client_id}/{round_index}".encode()).digest()
    gen = np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))
    vector = (0.1 * gen.standard_normal(length)).astype(dtype)
    return ClientInput(vector=vector, weight=float(10 + int(digest[16]) % 50))


def seeded_vectors(seed: int, client_id: str):
    """An `InputSource` for `ClientNode` in the insecure deterministic test mode."""

    def source(setup: RoundSetup) -> ClientInput:
        return seeded_vector(seed, client_id, setup.round_index, setup.vector.length,
                           setup.vector.dtype)

    return source
