"""The ckks audit a reviewer runs from the transcript alone (`protocols.ckks.audit`):
an honest round passes it, closed or left open; an aggregator that proposes different
contributor lists, or asks a third client to decrypt, is caught from the signed metas,
whether or not the clients refused in time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from protocols.ckks import CkksProtocol
from protocols.ckks.messages import ProposeContributors
from protocols.driver import run_round
from protocols.errors import ProtocolAbort
from protocols.messages import decode
from protocols.roster import Identities
from protocols.stages import ClientInput
from protocols.transcript import RoundRecord, RoundView, TranscriptWriter, verify_transcript

IDS = Identities.generate(["c0", "c1", "c2", "c3"])
SMALL = {"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": [60, 49], "scale_bits": 36,
         "flood_bits": 0}
INPUTS = {c: ClientInput(vector=np.arange(3.0) + i, weight=1.0)
          for i, c in enumerate(IDS.client_ids)}


class Equivocating(CkksProtocol):
    """Proposes c3 a list without c0; c3 is on it with its own digest and signs it."""

    def server_send(self, stage, state):
        state, out = super().server_send(stage, state)
        if stage != "ProposeContributors":
            return state, out
        return state, tuple(self._without_c0(m) if m.receiver == "c3" else m for m in out)

    @staticmethod
    def _without_c0(m: ProposeContributors) -> ProposeContributors:
        return dataclasses.replace(m, contributors=m.contributors[1:], digests=m.digests[32:])


class ThirdDecryptor(CkksProtocol):
    """Asks c2, third on the list, to decrypt as well: a third flooded decryption."""

    def server_send(self, stage, state):
        state, out = super().server_send(stage, state)
        if stage != "RequestDecryption":
            return state, out
        full = next(m for m in out if m.decrypt)
        return state, tuple(dataclasses.replace(full, receiver="c2") if m.receiver == "c2"
                            else m for m in out)


def _run(protocol: CkksProtocol, path: Path) -> tuple[list[RoundRecord], Exception | None]:
    """One round into a transcript; the records an audit sees, and the abort if any."""
    records: list[RoundRecord] = []

    def tap(stage: str, data: bytes) -> bytes:
        msg = decode(data)
        records.append(RoundRecord(line=len(records) + 1, stage=stage, type=msg.TYPE_NAME,
                                   sender=msg.sender, receiver=msg.receiver,
                                   meta=protocol.transcript_meta(msg), payload=None))
        return data

    error = None
    with TranscriptWriter.open(path, identities=IDS, protocol=protocol) as tw:
        try:
            run_round(protocol, round_index=0, inputs=INPUTS, identities=IDS, transcript=tw,
                      tap=tap)
        except ProtocolAbort as exc:
            error = exc
    return records, error


def _open_view(records: list[RoundRecord]) -> RoundView:
    return RoundView(round_index=0, records=tuple(records), statement=None,
                     close_line=records[-1].line)


def test_an_honest_round_passes_the_audit_closed_and_open(tmp_path: Path) -> None:
    protocol = CkksProtocol(**SMALL).bind(IDS)
    records, error = _run(protocol, tmp_path / "t.jsonl")
    assert error is None
    assert verify_transcript(tmp_path / "t.jsonl", IDS.roster()).ok
    assert protocol.audit_round(_open_view(records)) == []
    # Left open after the decryptions (no close): the same rules still pass.
    cut = [r for r in records if r.stage != "BroadcastAggregate"]
    assert protocol.audit_round(_open_view(cut)) == []


def test_an_equivocating_aggregator_is_caught(tmp_path: Path) -> None:
    """c3 signs the other list; it does not verify against the proposal everyone else
    signed, so c3 is dropped and the round completes over the majority's list. The
    clients lost nothing, but the transcript shows the equivocation."""
    protocol = Equivocating(**SMALL).bind(IDS)
    records, error = _run(protocol, tmp_path / "t.jsonl")
    assert error is None
    report = verify_transcript(tmp_path / "t.jsonl", IDS.roster())
    assert not report.ok
    assert any("contributor list sent to c3" in p.message and "equivocated" in p.message
               for p in report.problems)
    open_problems = protocol.audit_round(_open_view(records))
    assert [why for _, why in open_problems] == [
        "the contributor list sent to c3 differs from the one sent to c0: the aggregator "
        "equivocated"]


def test_a_third_decryptor_is_refused_and_caught(tmp_path: Path) -> None:
    protocol = ThirdDecryptor(**SMALL).bind(IDS)
    records, error = _run(protocol, tmp_path / "t.jsonl")
    assert isinstance(error, ProtocolAbort) and "c2 refuses" in str(error)
    report = verify_transcript(tmp_path / "t.jsonl", IDS.roster())
    assert any("c2 was asked to decrypt" in p.message for p in report.problems)
    assert any("c2 was asked to decrypt" in why
               for _, why in protocol.audit_round(_open_view(records)))


@pytest.mark.parametrize("meta", [None, {"contributors": "c0"}, {"keyholder": 1,
                                                                   "contributors": []}])
def test_an_edited_meta_is_reported_not_raised(meta) -> None:
    record = RoundRecord(line=7, stage="ProposeContributors", type="ckks.ProposeContributors",
                         sender="aggregator", receiver="c0", meta=meta, payload=None)
    problems = CkksProtocol(**SMALL).audit_round(_open_view([record]))
    assert problems == [(7, "malformed ckks meta for stage ProposeContributors")]

