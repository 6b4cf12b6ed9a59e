"""The strategies built on the statistics release, end to end through the CLI on
tiny configs: dpstats on colored-digits (the release is the only charge; the
statement says what the fine-tuning, the personal denoiser and the restored style
guarantee), with the public model below the hand-off, on mnist-idx and
medmnist-npz files the test writes, and dpstats-gaussian through secagg."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from securediff.storage import read_json
from tests.data.test_idx import write_split
from tests.privacy.test_stats_release import (
    analytic_gaussian_epsilon,
    skellam_epsilon_from_integer_sensitivities,
)

runner = CliRunner()
PUBLIC = ["--public.dataset", "font-digits", "--public.per_class", "10", "--public.steps", "20"]
RELEASE = ["--stats.release", "true", "--stats.epsilon", "2", "--stats.finetune_steps", "6"]


def _train(tiny_args, name, *extra):
    result = runner.invoke(app, ["train", "--insecure-deterministic", "4", "--json", "--run.name", name,
                                 *tiny_args, *RELEASE, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _rows(out) -> dict[str, str]:
    return {r["artefact"]: r["guarantee"] for r in out["privacy_statement"]["rows"]}


def _only_the_release_is_charged(run, kind: str) -> float:
    """The release's replace-one epsilon, checked against a computation from the
    record's noise and sensitivities that does not go through the project's accountant."""
    ledgers = read_json(run / "ledger.json")
    assert all([e["kind"] for e in led["events"]] == [kind] for led in ledgers.values())
    assert all(e["relation"] == "replace_one" for led in ledgers.values() for e in led["events"])
    record = read_json(run / "stats-release.json")
    assert record["relation"] == "replace_one"  # the shared claim's relation: calibrated and stated under it
    epsilon, delta, sens = record["epsilon"]["replace_one"], record["delta"], record["sensitivities"]
    if kind == "gaussian_release":  # central noise; the PLD pair is exact up to its grid
        independent = analytic_gaussian_epsilon(sens["l2_replace_one"], record["noise"]["std_released_units"],
                                                delta)
        assert record["accountant"] == "pld" and independent * (1 - 1e-6) <= epsilon <= independent * 1.01
    else:  # Skellam shares: the realized noise of the contributors' shares
        independent = skellam_epsilon_from_integer_sensitivities(
            sens["l1_replace_one"], sens["l2_replace_one"], variance=record["noise"]["noise_variance"], delta=delta)
        assert epsilon == pytest.approx(independent, rel=1e-6)
    assert epsilon < record["epsilon"]["add_remove"] * 2  # tighter than doubling the add/remove shift
    return epsilon


def test_dpstats_on_colored_digits_charges_the_release_alone_and_says_what_is_not_covered(tmp_path, tiny_args):
    out = _train(tiny_args, "dps", *PUBLIC, "--federation.strategy", "dpstats", "--data.dataset",
                 "colored-digits", "--stats.feature_map", "colour-normalised-grey", "--stats.handoff_t", "600")
    run = tmp_path / "runs" / "dps"
    epsilon = _only_the_release_is_charged(run, "gaussian_release")
    # The fine-tuning is post-processing: the shared claim is the release's, nothing added.
    assert out["summary"]["epsilon_shared_max"] == pytest.approx(epsilon, rel=1e-6) and epsilon <= 2.0 + 1e-9
    assert len(out["clients"]) == 3 and all(0.0 <= c["accuracy"] <= 1.0 for c in out["clients"])
    rows = _rows(out)
    assert any(a.startswith("feature statistics") for a in rows)
    assert "for t > 600: post-processing of the release, no further charge" in rows["shared denoiser and its updates"]
    assert "none for the client's own records: trained on its raw member records for t <= 600 without DP-SGD" \
        in rows["personal denoiser"]
    samples = rows["synthetic samples of a client"]
    assert "none for the client's own records" in samples
    assert f"other clients' records: the feature statistics release's guarantee (epsilon = {epsilon:.3f}" in samples
    assert "restored from the client's own member records: it carries NO guarantee for those records" in samples
    # The shared model moved from the public one: it was fine-tuned on the draws.
    from securediff.reopen import open_finished

    reopened = open_finished(run, device="cpu")
    strategy = reopened.state.strategy
    assert strategy.release is not None  # the committed release, attached again on reopening
    public = reopened.state.clients[0].model  # started as the public model; trained below t_s only
    assert any(not torch.equal(a, b) for a, b in zip(strategy.global_model.parameters(), public.parameters(),
                                                     strict=True))


def test_dpstats_with_the_public_model_below_the_hand_off_covers_every_record(tmp_path, tiny_args):
    out = _train(tiny_args, "shared", *PUBLIC, "--federation.strategy", "dpstats", "--stats.below_handoff",
                 "shared")
    run = tmp_path / "runs" / "shared"
    epsilon = _only_the_release_is_charged(run, "gaussian_release")
    rows = _rows(out)
    assert rows["personal denoiser"].endswith("none trained: below t = 500 the client samples the public model "
                                              "(no record of the client is used)")
    assert rows["synthetic samples of a client"] == (
        f"NOT PRIVATE: insecure deterministic test mode (seeded noise). every record of every client: the feature "
        f"statistics release's guarantee (epsilon = {epsilon:.3f}, delta = 1e-05; post-processing) (shared model "
        "above the hand-off, public model below)")  # digits: the identity map keeps all, no style restored
    from securediff.reopen import open_finished

    clients = open_finished(run, device="cpu").state.clients
    # No client trained its copy of the public model: all are still the same.
    for other in clients[1:]:
        assert all(torch.equal(a, b) for a, b in zip(clients[0].model.parameters(), other.model.parameters(),
                                                     strict=True))


def _blobs(n: int, size: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images: class k is a bright bar at row 2 + 2k, with noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 + 2 * k: 4 + 2 * k, 3:size - 3] = 230
    return images, labels.astype(np.uint8)


SMALL_DATA = ["--data.test_fraction", "0.25", "--eval.samples_per_class", "2", "--stats.clip", "30"]


def test_dpstats_runs_on_mnist_idx_files(tmp_path, tiny_args):
    images, labels = _blobs(240, 28, 10, seed=0)
    write_split(tmp_path, images=images, labels=labels)
    out = _train(tiny_args, "idx", *PUBLIC, *SMALL_DATA, "--federation.strategy", "dpstats", "--data.dataset",
                 "mnist-idx", "--data.path", str(tmp_path), "--stats.feature_map", "colour-normalised-grey")
    assert out["summary"]["dataset"] == "mnist-idx"
    _only_the_release_is_charged(tmp_path / "runs" / "idx", "gaussian_release")
    record = read_json(tmp_path / "runs" / "idx" / "stats-release.json")
    assert (record["dim"], record["num_classes"]) == (28 * 28, 10)


def test_dpstats_runs_on_medmnist_npz_with_public_medmnist_data(tmp_path, tiny_args):
    def archive(path, seed):
        images, labels = _blobs(160, 28, 4, seed)
        np.savez(path, train_images=images, train_labels=labels[:, None], val_images=images[:8],
                 val_labels=labels[:8, None], test_images=images[:8], test_labels=labels[:8, None])
        return path

    private, public = archive(tmp_path / "private.npz", 1), archive(tmp_path / "public.npz", 2)
    out = _train(tiny_args, "med", *SMALL_DATA, "--federation.strategy", "dpstats", "--data.dataset",
                 "medmnist-npz", "--data.path", str(private), "--public.dataset", "medmnist-npz",
                 "--public.path", str(public), "--public.steps", "20")
    assert out["summary"]["dataset"] == "medmnist-npz" and len(out["clients"]) == 3
    epsilon = _only_the_release_is_charged(tmp_path / "runs" / "med", "gaussian_release")
    assert out["summary"]["epsilon_shared_max"] == pytest.approx(epsilon, rel=1e-6)
    record = read_json(tmp_path / "runs" / "med" / "stats-release.json")
    assert (record["dim"], record["num_classes"]) == (28 * 28, 4)


def test_dpstats_gaussian_through_secagg_draws_from_the_release_alone(tmp_path, tiny_args):
    out = _train(tiny_args, "gauss", "--federation.strategy", "dpstats-gaussian", "--data.dataset",
                 "colored-digits", "--stats.feature_map", "colour-normalised-grey", "--stats.clip", "10",
                 "--protocol", "secagg", "--privacy.accountant", "rdp")
    run = tmp_path / "runs" / "gauss"
    epsilon = _only_the_release_is_charged(run, "skellam_release")
    assert out["summary"]["epsilon_shared_max"] == pytest.approx(epsilon, rel=1e-6)
    rows = _rows(out)
    assert "draws from the released class-conditional Gaussians" in rows["shared denoiser and its updates"]
    assert "every record of every client: the feature statistics release's guarantee" \
        in rows["synthetic samples of a client"]
    assert "NO guarantee for those records" in rows["synthetic samples of a client"]
    # The headline (and the sample figure's caption) names the release: there is no denoiser.
    assert out["privacy_statement"]["headline"]["artefact"] == "feature statistics release"
    from securediff.figures import headline_text

    assert headline_text(out["privacy_statement"]).startswith(f"feature statistics release: epsilon = {epsilon:.3f}")
    # A finished run is sampled again from its committed release (reopened, not re-released).
    sampled = runner.invoke(app, ["sample", str(run), "--client", "client-01", "--per-class", "3", "--json"])
    assert sampled.exit_code == 0, sampled.output
    # No diffusion model: nothing for the shared-model audit to attack.
    audit = runner.invoke(app, ["audit", "run", str(run), "--json"])
    assert audit.exit_code != 0 and "no" in audit.output and "denoiser" in audit.output


class Crash(Exception):
    pass


def test_a_dpstats_run_cut_after_a_round_resumes_to_the_uninterrupted_result(tmp_path, tiny_args, monkeypatch):
    from securediff.storage import load_tensors

    from .conftest import at_checkpoint, no_checkpoint_hooks

    args = [*PUBLIC, "--federation.strategy", "dpstats", "--federation.rounds", "3"]
    _train(tiny_args, "whole", *args)

    def crash_after_first_round(run, n):
        if n == 3:  # the set-up's checkpoint, the release's, then round 0's
            raise Crash("simulated crash")

    at_checkpoint(monkeypatch, "after", crash_after_first_round)
    cut = runner.invoke(app, ["train", "--insecure-deterministic", "4", "--json", "--run.name", "cut",
                              *tiny_args, *RELEASE, *args])
    assert isinstance(cut.exception, Crash)
    staging = tmp_path / "runs" / "cut.incomplete"
    assert read_json(staging / "checkpoints" / "progress.json")["rounds_done"] == 1
    no_checkpoint_hooks(monkeypatch)
    resumed = runner.invoke(app, ["train", "--resume", str(staging), "--json"])
    assert resumed.exit_code == 0, resumed.output
    done = tmp_path / "runs" / "cut"
    # Released once, charged once; the rest of the fine-tuning drew from the committed release.
    _only_the_release_is_charged(done, "gaussian_release")
    a = load_tensors(tmp_path / "runs" / "whole" / "checkpoints" / "state.safetensors")
    b = load_tensors(done / "checkpoints" / "state.safetensors")
    assert all(a[k].equal(b[k]) for k in a), "resumed run differs from the uninterrupted one"
