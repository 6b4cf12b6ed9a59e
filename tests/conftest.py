"""Settings every test process shares, and the order files start in.

`make test` runs the suite on two pytest-xdist workers (one per core), and each
worker keeps PyTorch to one intra-op thread: two workers of two threads each on
two cores spend their time switching. xdist also sets COLUMNS=80 in its workers;
the CLI's Rich console reads COLUMNS once, when it is created, so a test that
asks for a wider terminal through CliRunner(env=...) would be ignored. Removing it
here keeps the terminal width a per-invocation choice, as it is without xdist.
"""

from __future__ import annotations

import os
import tempfile

# The evaluator cache (a per-user directory outside run directories) is one
# temporary directory per test process: shared by the tests of that process,
# never the user's own.
os.environ["SECUREDIFF_CACHE_DIR"] = tempfile.mkdtemp(prefix="securediff-test-cache-")

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import torch

    torch.set_num_threads(1)


# `make test` runs files whole on each worker (--dist loadfile) in collection order
# (--no-loadscope-reorder: xdist's default order, most tests first, started the
# few-test, minutes-long files last, and one worker ran them alone at the end).
# Files marked slow(seconds=N) start first, longest first; the rest keep their order.
_UNMARKED_SLOW_SECONDS = 30.0


def _file_seconds(item) -> float:
    marker = item.get_closest_marker("slow")
    if marker is None:
        return 0.0
    return float(marker.kwargs.get("seconds", _UNMARKED_SLOW_SECONDS))


def pytest_collection_modifyitems(config, items) -> None:
    by_file: dict[str, float] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        by_file[path] = max(by_file.get(path, 0.0), _file_seconds(item))
    items.sort(key=lambda item: -by_file[item.nodeid.split("::", 1)[0]])  # stable
