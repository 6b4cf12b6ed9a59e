"""The ServerApp's exchange pulls replies every REPLY_POLL_SECONDS instead of
Grid.send_and_receive's fixed 3 s: it returns as soon as the last reply is there,
returns what came by the timeout when a node stays silent, and asks only for the
replies still missing."""

from __future__ import annotations

import time
from itertools import pairwise
from types import SimpleNamespace

import pytest

from securediff.flower.apps import REPLY_POLL_SECONDS, send_and_receive


class SlowGrid:
    """Replies to message i become pullable `delays[i]` seconds after the push
    (None: never); each pull records which ids it asked for."""

    def __init__(self, delays: list[float | None]) -> None:
        self.delays = delays
        self.pushed_at = 0.0
        self.asked: list[set[str]] = []

    def push_messages(self, messages):
        self.pushed_at = time.monotonic()
        return [f"m{i}" for i in range(len(list(messages)))]

    def pull_messages(self, ids):
        ids = set(ids)
        self.asked.append(ids)
        now = time.monotonic() - self.pushed_at
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=f"m{i}"), i=i)
                for i, d in enumerate(self.delays)
                if d is not None and d <= now and f"m{i}" in ids]


def test_the_exchange_ends_one_poll_after_the_last_reply():
    grid = SlowGrid([0.1, 0.5, 0.3])
    started = time.monotonic()
    replies = send_and_receive(grid, ["a", "b", "c"], timeout=30.0)
    took = time.monotonic() - started
    assert sorted(r.i for r in replies) == [0, 1, 2]
    assert 0.5 <= took < 0.5 + REPLY_POLL_SECONDS + 0.5  # Grid.send_and_receive: 3 s or more
    # a reply once pulled is not asked for again: each pull asks for a subset of the last
    assert grid.asked[0] == {"m0", "m1", "m2"}
    assert all(later <= earlier for earlier, later in pairwise(grid.asked))
    assert grid.asked[-1] == {"m1"}


@pytest.mark.parametrize("timeout", [0.0, 0.45])
def test_a_silent_node_costs_the_timeout_and_the_others_are_returned(timeout):
    grid = SlowGrid([0.0, None, 0.2])
    started = time.monotonic()
    replies = send_and_receive(grid, ["a", "b", "c"], timeout=timeout)
    took = time.monotonic() - started
    assert timeout <= took < timeout + 0.5
    assert sorted(r.i for r in replies) == ([0] if timeout == 0.0 else [0, 2])
    assert all("m1" in asked for asked in grid.asked)  # asked for until the end
