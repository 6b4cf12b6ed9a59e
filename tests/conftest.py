"""Settings every test process shares.

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
