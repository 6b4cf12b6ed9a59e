"""Whole runs through the CLI, as a user types them (Typer's CliRunner)."""

import json

import pytest
from typer.testing import CliRunner

from cli.app import app
from protocols import load_rosters, verify_transcript
from securediff.storage import load_tensors, read_json

runner = CliRunner()

RUN_FILES = ["config.toml", "manifest.json", "ledger.json", "transcript.jsonl", "roster.json", "metrics.json",
             "samples.png", "partition.json", "privacy_statement.json", "privacy_statement.md",
             "checkpoints/state.safetensors", "checkpoints/noised-data.safetensors"]


def test_tiny_pfdm_run_writes_a_complete_run_directory(tmp_path, tiny_args):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "7", "--run.name", "t", "--json", *tiny_args])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    run = tmp_path / "runs" / "t"
    assert out["run_dir"] == str(run)
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert not (tmp_path / "runs" / "t.incomplete").exists()
    # Headline epsilon: the calibrated forward noise at the default target (<= 10, exact accounting).
    summary = out["summary"]
    assert 9.5 < summary["epsilon_shared_max"] <= 10.0
    assert summary["private"] is False
    assert all("NOT PRIVATE" in row["guarantee"] for row in out["privacy_statement"]["rows"])
    manifest = read_json(run / "manifest.json")
    assert manifest["private"] is False and manifest["seeds"]["insecure_seed"] == 7
    # Every file is pinned by digest in the manifest.
    state = manifest["files"]["checkpoints/state.safetensors"]
    load_tensors(run / "checkpoints" / "state.safetensors", expected_sha256=state)
    # The transcript verifies against the pinned roster without trusting the aggregator.
    report = verify_transcript(run / "transcript.jsonl", load_rosters(run / "roster.json"))
    assert report.ok, report.problems
    ledgers = read_json(run / "ledger.json")
    assert set(ledgers) == {"client-00", "client-01", "client-02"}
    assert all(e["kind"] == "forward_noise" for led in ledgers.values() for e in led["events"])
    assert len(out["clients"]) == 3
    # The evaluator (no DP, pooled raw records) never lands beside the runs, and the
    # statement names it as not private.
    assert not (tmp_path / "runs" / ".cache").exists()
    assert not list(tmp_path.rglob("evaluator-*"))
    evaluator = [r for r in out["privacy_statement"]["rows"] if r["artefact"].startswith("evaluator")]
    assert len(evaluator) == 1 and "not private" in evaluator[0]["guarantee"]
    assert "pooled raw records" in evaluator[0]["guarantee"]


def test_insecure_runs_repeat_bit_for_bit(tmp_path, tiny_args):
    for name in ("a", "b"):
        r = runner.invoke(app, ["train", "--insecure-deterministic", "3", "--run.name", name, "--json", *tiny_args])
        assert r.exit_code == 0, r.output
    a = load_tensors(tmp_path / "runs" / "a" / "checkpoints" / "state.safetensors")
    b = load_tensors(tmp_path / "runs" / "b" / "checkpoints" / "state.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--data.colour", "red"], "data.colour"),
        (["--nosection.key", "1"], "nosection"),
        (["--privacy.target_epsilon", "-1"], "privacy.target_epsilon"),
        (["--privacy.target_epsilon", "inf"], "privacy.target_epsilon"),
        (["--privacy.delta", "0"], "privacy.delta"),
        (["--privacy.delta", "1.5"], "privacy.delta"),
        (["--privacy.t0", "5000"], "privacy.t0"),
        (["--privacy.t0", "0"], "privacy.t0"),
        (["--privacy.t0", "10"], "privacy.t0"),  # too little noise for the target epsilon
        (["--privacy.clip_norm", "0"], "privacy.clip_norm"),
        (["--privacy.accountant", "guess"], "privacy.accountant"),
        (["--privacy.labels", "secret"], "privacy.labels"),
        (["--privacy.noise_multiplicity", "0"], "privacy.noise_multiplicity"),
        (["--data.alpha", "0"], "data.alpha"),
        (["--data.alpha", "many"], "data.alpha"),
        (["--data.num_clients", "0"], "data.num_clients"),
        (["--data.num_clients", "2.5"], "data.num_clients"),
        (["--data.holdout_fraction", "1"], "data.holdout_fraction"),
        (["--data.partition", "random"], "data.partition"),
        (["--data.dataset", "mnist-idx", "--data.path", "/nonexistent/mnist"], "data.path"),
        (["--data.dataset", "medmnist-npz"], "data.path"),
        (["--data.dataset", "cifar"], "data.dataset"),
        (["--federation.strategy", "nope"], "federation.strategy"),
        (["--protocol", "carrier-pigeon"], "federation.protocol"),
        (["--federation.client_fraction", "0"], "federation.client_fraction"),
        (["--dropout-rate", "1"], "federation.dropout_rate"),
        (["--protocol.min_survivors", "-3"], "protocol"),
        (["--protocol.no_such_knob", "1"], "protocol"),
        (["--diffusion.T", "1"], "diffusion.T"),
        (["--diffusion.schedule", "sqrt"], "diffusion.schedule"),
        (["--diffusion.beta_end", "0.00001"], "diffusion.beta_start/beta_end"),
        (["--model.base_channels", "12"], "model.base_channels"),
        (["--model.channel_mults", "0,2"], "model.channel_mults"),
        (["--training.batch_size", "0"], "training.batch_size"),
        (["--training.lr", "2"], "training.lr"),
        (["--device", "tpu"], "run.device"),
        (["--run.name", "../escape"], "run.name"),
        (["--run.name", "two\nlines"], "run.name"),
        (["stray"], "unexpected argument"),
    ],
)
def test_bad_config_exits_2_with_one_line_and_no_run_directory(tmp_path, tiny_args, args, needle):
    result = runner.invoke(app, ["train", "--run.name", "bad", *tiny_args, *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_config_file(tmp_path, tiny_args):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[privacy]\nunknown_knob = 3\n")
    result = runner.invoke(app, ["train", "--config", str(cfg), *tiny_args])
    assert result.exit_code == 2 and "privacy.unknown_knob" in result.output
    cfg.write_text("[privacy\n")
    result = runner.invoke(app, ["train", "--config", str(cfg), *tiny_args])
    assert result.exit_code == 2 and "not valid TOML" in result.output


def test_a_missing_idx_dataset_file_exits_2(tmp_path, tiny_args):
    empty = tmp_path / "mnist"
    empty.mkdir()
    result = runner.invoke(app, ["train", "--data.dataset", "mnist-idx", "--data.path", str(empty), *tiny_args])
    assert result.exit_code == 2, result.output
    assert "train-images" in result.output
    assert not any((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True


def test_cuda_on_a_host_without_it_leaves_no_run_directory(tmp_path, tiny_args):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    result = runner.invoke(app, ["train", "--run.name", "gpu", *tiny_args, "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA device" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    # The same name then starts at once on the CPU: no dead end.
    again = runner.invoke(app, ["train", "--run.name", "gpu", *tiny_args, "--device", "cpu",
                                "--federation.rounds", "1", "--json"])
    assert again.exit_code == 0, again.output
