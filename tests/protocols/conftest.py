from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from protocols.roster import Identities
from protocols.stages import ClientInput

CLIENTS = ("c0", "c1", "c2", "c3")


@pytest.fixture(scope="session")
def identities() -> Identities:
    return Identities.generate(CLIENTS)


@pytest.fixture
def make_inputs() -> Callable[..., dict[str, ClientInput]]:
    """Inputs for CLIENTS: vector i drawn from a seeded generator, weight i + 1."""

    def make(*, seed: int = 0, length: int = 12, dtype: str = "float64") -> dict[str, ClientInput]:
        rng = np.random.default_rng(seed)
        out = {}
        for i, cid in enumerate(CLIENTS):
            raw = rng.normal(size=length) * 10
            vector = raw.round().astype(dtype) if dtype == "int64" else raw.astype(dtype)
            out[cid] = ClientInput(vector=vector, weight=float(i + 1))
        return out

    return make
