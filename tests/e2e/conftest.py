import pytest

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
