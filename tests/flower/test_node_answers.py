"""A node uses each trained update in one round set-up only, recorded in its state
directory: neither a restarted node nor a new Flower run at the same round index can
make it mask the same update again for another survivor list."""

from __future__ import annotations

import pytest
import torch

from protocols.errors import ProtocolAbort
from protocols.stages import RoundSetup, VectorSpec
from securediff.flower.node_settings import update_source
from securediff.storage import save_tensors


def _setup(round_index: int) -> RoundSetup:
    return RoundSetup(protocol="secagg", round_index=round_index, aggregator_id="agg",
                      participants=("c0", "c1", "c2"), vector=VectorSpec(4, "float32"),
                      threshold=2, binding="flower run x, session 0")


def test_an_update_is_used_in_one_round_setup(tmp_path):
    save_tensors(tmp_path / "update.safetensors", {"update": torch.ones(4)},
                 {"round": "2", "run": "r1", "weight": "3.0"})
    first = update_source(tmp_path, "c0")(_setup(2))
    assert first.weight == 3.0
    restarted = update_source(tmp_path, "c0")  # nothing kept in memory
    with pytest.raises(ProtocolAbort, match="already answered"):
        restarted(_setup(2))
    # The next trained update (another round, or the same round of another run) is new.
    save_tensors(tmp_path / "update.safetensors", {"update": torch.ones(4)},
                 {"round": "2", "run": "r2", "weight": "3.0"})
    assert restarted(_setup(2)).weight == 3.0
