"""Train several clients at once, each on one intra-op thread.

torch's intra-op threads help little on the small convolutions of an 8x8 UNet
at batch 64, and on a machine where anything else runs they collapse: on this
2-core machine a plain step on two threads went from ~60 ms to over 1.5 s
while one other process was busy, and one thread per client with two clients
side by side ran at ~35 ms per step (docs/performance.md). Clients are
independent within a phase of a round (their own data, generators, noise
streams and ledgers; the shared model is only read), so running them in
threads changes no result: each client's computation runs on one thread
whatever the scheduling, so a run stays bit-for-bit reproducible.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def resolve_workers(requested: int, *, device: torch.device) -> int:
    """0 means one per CPU core; accelerators train one client at a time."""
    if device.type != "cpu":
        return 1
    return requested if requested > 0 else max(1, os.cpu_count() or 1)


def map_clients(fn: Callable[[T], R], items: Sequence[T], *, workers: int) -> list[R]:
    """[fn(x) for x in items], with up to `workers` running at once, in order.

    With more than one worker, torch runs on one intra-op thread for the
    duration (restored afterwards), so the result of each call does not depend
    on how many calls share the machine. An exception in any call is raised
    here after the running calls have finished.
    """
    workers = min(workers, len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # OpenMP's thread count is per thread: set it in each worker as well.
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,),
                                thread_name_prefix="securediff-client") as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(saved)


class Serialized:
    """Wrap a callback so calls from worker threads do not interleave."""

    def __init__(self, callback: Callable[..., None]) -> None:
        self._callback = callback
        self._lock = threading.Lock()

    def __call__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 (forwarded as is)
        with self._lock:
            self._callback(*args, **kwargs)
