"""The train summary (`print_result`, what `securediff train` prints at its end) names
what a protocol's blindness rests on: the tee run says it is simulated, in the summary
and in the privacy statement's table."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli.common import console
from cli.render import print_protocol_notice, print_result, statement_table
from protocols.tee import SIMULATED_NOTICE
from securediff.statement import SINGLE_KEY_CKKS_NOTICE, privacy_statement


def _result(protocol: str, secure: bool) -> SimpleNamespace:
    statement = privacy_statement(
        strategy="pfdm", protocol_secure=secure, protocol_name=protocol, private=True, delta=1e-5,
        t0=675, clip_norm=10.0, forward_exact=9.97, forward_classic=11.57, shared_epsilon=9.97,
        personal_epsilon=math.inf, accountant="pld", labels="public", label_epsilon=1.0)
    summary = {"strategy": "pfdm", "dataset": "digits", "num_clients": 1, "protocol": protocol,
               "private": True, "mean": {}, "epsilon_shared_max": 9.97}
    client = {"client_id": "client-00", "members": 10, "epsilon_shared": 9.97, "accuracy": 0.5,
              "fid_majority": None, "fid_minority": None, "bias_std": None, "bias_gap": None}
    return SimpleNamespace(clients=[client], summary=summary, statement=statement,
                           run_dir=Path("runs/x"), seconds=1.0, peak_rss_mb=1.0)


def _printed(result: SimpleNamespace) -> str:
    with console.capture() as captured:
        print_result(result)
    return captured.get()


@pytest.mark.parametrize(("protocol", "notice"), [("tee", SIMULATED_NOTICE),
                                                  ("ckks", SINGLE_KEY_CKKS_NOTICE)])
def test_the_train_summary_says_what_blindness_rests_on(protocol: str, notice: str) -> None:
    out = _printed(_result(protocol, secure=True))
    assert f"protocol {protocol}: {notice}" in out  # the summary's own line, unwrapped
    # ... and the privacy statement's table (its caption wraps with the table's width)
    assert " ".join(out.split()).count(notice) >= 2


def test_no_notice_for_plain_or_secagg() -> None:
    for protocol, secure in (("plain", False), ("secagg", True)):
        out = _printed(_result(protocol, secure))
        assert SIMULATED_NOTICE not in out and SINGLE_KEY_CKKS_NOTICE not in out
    with console.capture() as captured:
        print_protocol_notice("secagg")
    assert captured.get() == ""


def test_plain_and_unchecked_secagg_are_named_before_the_rounds() -> None:
    """A bare `securediff train` aggregates with plain (the library default): it says so
    before any update leaves, not only in the final statement."""
    with console.capture() as captured:
        print_protocol_notice("plain")
        print_protocol_notice("secagg", {"consistency_check": False})
        print_protocol_notice("secagg", {"consistency_check": True})
    out = " ".join(captured.get().split())
    assert "protocol plain: INSECURE baseline, the aggregator sees every client's update" in out
    assert "secagg without the consistency check" in out
    assert out.count("protocol secagg:") == 1  # the checked secagg says nothing


def test_the_statement_table_names_what_the_claims_assume() -> None:
    statement = privacy_statement(
        strategy="hybrid", protocol_secure=True, protocol_name="secagg", private=True, delta=1e-5,
        t0=675, clip_norm=10.0, forward_exact=9.97, forward_classic=11.57, shared_epsilon=5.0,
        personal_epsilon=math.inf, accountant="rdp", labels="public", label_epsilon=1.0)
    with console.capture() as captured:
        console.print(statement_table(statement))
    out = " ".join(captured.get().split())
    assert "assumes: add/remove claims treat each client's record count as public" in out
    assert "assumes: the Skellam noise floor holds only if no client colludes with the aggregator" in out
