"""secagg's noise floor (`min_contributors`) for distributed DP: a round whose
sum would hold fewer noise shares than planned is never unmasked, whoever asks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from protocols.driver import run_round
from protocols.errors import ProtocolAbort
from protocols.roster import Identities
from protocols.secagg import SecAggProtocol
from protocols.stages import ClientInput
from protocols.transcript import TranscriptWriter, verify_transcript

IDS = Identities.generate([f"d{i}" for i in range(7)])


def _inputs() -> dict[str, ClientInput]:
    gen = np.random.default_rng(5)
    return {c: ClientInput(vector=gen.integers(-1000, 1000, size=16), weight=1.0)
            for c in IDS.client_ids}


def test_a_round_at_the_floor_aggregates_and_verifies(tmp_path: Path) -> None:
    protocol = SecAggProtocol(min_contributors=5).bind(IDS)
    inputs = _inputs()
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=IDS, protocol=protocol, store_payloads=True) as tw:
        result = run_round(protocol, round_index=0, inputs=inputs, identities=IDS, transcript=tw,
                           dropouts={"d1": "MaskedInput", "d4": "MaskedInput"})
    assert sorted(result.contributors) == sorted(set(IDS.client_ids) - {"d1", "d4"})
    expected = sum(inputs[c].vector for c in result.contributors)
    assert np.array_equal(result.weighted_sum, expected.astype(np.float64))
    report = verify_transcript(path, IDS.roster())
    assert report.ok, report.problems


def test_below_the_floor_the_aggregator_aborts_before_unmasking() -> None:
    protocol = SecAggProtocol(min_contributors=5)
    with pytest.raises(ProtocolAbort, match="below the noise floor of 5"):
        run_round(protocol, round_index=0, inputs=_inputs(), identities=IDS, transcript=None,
                  dropouts={c: "MaskedInput" for c in ("d1", "d4", "d6")})


class FloorIgnoringAggregator(SecAggProtocol):
    """An aggregator that skips its own floor check and moves one client to `dropped`
    (without the consistency round, nothing else stops it)."""

    def server_send(self, stage, state):
        if stage == "UnmaskRequest":
            saved = state.data.ctx
            state = dataclasses.replace(
                state, data=dataclasses.replace(state.data, ctx=dataclasses.replace(saved, min_contributors=0)))
        state, out = super().server_send(stage, state)
        if stage == "UnmaskRequest":
            victim = out[-1].included[-1]
            out = tuple(dataclasses.replace(m, included=tuple(c for c in m.included if c != victim),
                                            dropped=tuple(sorted((*m.dropped, victim))))
                        for m in out if m.receiver != victim)
        return state, out


def test_honest_clients_refuse_to_unmask_below_the_floor() -> None:
    protocol = FloorIgnoringAggregator(min_contributors=6, consistency_check=False)
    with pytest.raises(ProtocolAbort, match="below the noise floor of 6 contributors"):
        run_round(protocol, round_index=0, inputs=_inputs(), identities=IDS, transcript=None,
                  dropouts={"d2": "MaskedInput"})


def test_the_floor_must_be_a_non_negative_int() -> None:
    from protocols.errors import ProtocolInputError

    with pytest.raises(ProtocolInputError, match="min_contributors"):
        SecAggProtocol(min_contributors=-1)
