from collections.abc import Callable

import pytest

from securediff.federation.runner import FederatedRun

# A run small enough for the test suite: 3 clients, 2 rounds, a tiny UNet.
TINY = [
    "--data.num_clients", "3", "--federation.rounds", "2", "--federation.local_steps", "3",
    "--training.personal_steps", "4", "--training.batch_size", "16", "--model.base_channels", "8",
    "--eval.samples_per_class", "4", "--eval.evaluator_epochs", "1", "--diffusion.sample_steps", "8",
    "--training.centralized_steps", "6",
]


@pytest.fixture
def tiny_args(tmp_path):
    return ["--run.out_dir", str(tmp_path / "runs"), *TINY]


def at_checkpoint(monkeypatch, point: str, action: Callable[[FederatedRun, int], None]) -> None:
    """Call `action(run, n)` each time a checkpoint of any run reaches `point`
    ("before", "staged", "committed", "after"; FederatedRun.checkpoint_hooks), n
    counting those calls from 1 (the set-up's checkpoint). An action that raises
    is a crash at that point."""
    calls = {"n": 0}

    def hook(run: FederatedRun, reached: str) -> None:
        if reached == point:
            calls["n"] += 1
            action(run, calls["n"])

    monkeypatch.setattr(FederatedRun, "checkpoint_hooks", (hook,))


def no_checkpoint_hooks(monkeypatch) -> None:
    monkeypatch.setattr(FederatedRun, "checkpoint_hooks", ())
