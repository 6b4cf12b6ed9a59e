"""Parts of the run report: epsilon after each round, and the little Markdown."""

from __future__ import annotations

import pytest

from securediff.privacy.ledger import DPSGDEvent, ForwardNoiseEvent, PrivacyLedger
from securediff.run_report.epsilon import epsilon_by_round
from securediff.run_report.markdown import to_html


def _ledger(cid: str, events) -> PrivacyLedger:
    return PrivacyLedger(client_id=cid, budget_epsilon=100.0, delta=1e-5, accountant="rdp",
                         events=events)


def test_per_round_steps_follow_the_rounds_a_client_trained_in() -> None:
    dpsgd = DPSGDEvent(noise_multiplier=1.0, sample_rate=0.1, steps=6, artefact="shared")
    forward = ForwardNoiseEvent(sigma=10.0, clip_norm=10.0, t0=600, data_id="b/members")
    ledgers = {"a": _ledger("a", [dpsgd]), "b": _ledger("b", [forward])}
    rounds = [{"clients": ["a", "b"]}, {"clients": ["b"]}, {"clients": ["a", "b"]}]
    rows = epsilon_by_round(ledgers, rounds)
    a = [row["clients"]["a"] for row in rows]
    assert a[0] is None  # nothing paid before a's first round
    assert a[1] == pytest.approx(a[2])  # a did not train in round 2
    assert a[2] < a[3]
    assert a[3] == pytest.approx(ledgers["a"].epsilon("shared"))  # the whole ledger at the end
    # Forward noise is paid once, before the first round.
    b = [row["clients"]["b"] for row in rows]
    assert b == [pytest.approx(ledgers["b"].epsilon("shared"))] * 4
    assert rows[-1]["max"] == pytest.approx(max(a[3], ledgers["b"].epsilon("shared")))


def test_markdown_is_escaped_then_formatted() -> None:
    html = to_html("# Title <b>\n\n**bold** and `code` & <i>x</i>\n\n- one\n- two\n\n"
                   "| a | b |\n|---|---|\n| 1 | <2> |\n", demote=1)
    assert "<h2>Title &lt;b&gt;</h2>" in html
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "&amp;" in html and "<i>" not in html
    assert "<ul><li>one</li><li>two</li></ul>" in html
    assert "<th>a</th>" in html and "<td>&lt;2&gt;</td>" in html
