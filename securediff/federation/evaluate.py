"""The end of a run: sample every client's model and evaluate it (securediff.figures
draws the labelled grid)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from securediff.data.partition import minority_classes
from securediff.data.tint import apply_tint, client_tint
from securediff.diffusion.sampling import SamplerSpec, sample_split
from securediff.evaluation import ClientMetrics, evaluate_client, summarize, train_evaluator
from securediff.evaluation.cache import evaluator_cache_dir, evaluator_cache_key
from securediff.federation.clients import Client
from securediff.federation.setup import RunSetup
from securediff.federation.strategies import Strategy


def sampler_spec(setup: RunSetup) -> SamplerSpec:
    d = setup.config.diffusion
    return SamplerSpec(kind=d.sampler, steps=d.sample_steps, guidance=d.guidance)


def sample_client(
    strategy: Strategy, client: Client, setup: RunSetup, *, per_class: int, generator: torch.Generator,
    device: torch.device, batch: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` samples of every class from the client's own pipeline."""
    labels = torch.arange(setup.dataset.num_classes).repeat_interleave(per_class)
    direct = strategy.direct_samples(client, labels.numpy(), generator=generator)
    if direct is not None:  # a strategy that draws without a diffusion model
        return strategy.finish_samples(client, direct, labels.numpy()), labels.numpy()
    out = []
    for start in range(0, len(labels), batch):
        out.append(sample_split(strategy.segments(client), labels[start:start + batch], schedule=setup.schedule,
                                spec=sampler_spec(setup), shape=setup.dataset.image_shape, generator=generator,
                                null_label=setup.spec.null_label, device=device).cpu())
    return strategy.finish_samples(client, torch.cat(out).clamp(-1, 1).numpy(), labels.numpy()), labels.numpy()


def _pool_images(setup: RunSetup) -> tuple[np.ndarray, np.ndarray]:
    """The evaluator's training set: the non-test pool, each record as its owner holds it."""
    xs, ys = [], []
    for index, split in enumerate(setup.partition.clients):
        idx = np.concatenate([split.member_indices, split.holdout_indices])
        xs.append(setup.client_images(index, idx))
        ys.append(setup.dataset.labels[idx])
    return np.concatenate(xs), np.concatenate(ys)


def evaluate_clients(
    strategy: Strategy, clients: list[Client], setup: RunSetup, *, cache_dir: Path | None = None,
    device: torch.device,
    generator: torch.Generator, progress=None,
) -> tuple[list[ClientMetrics], dict, dict[str, np.ndarray]]:
    cfg = setup.config
    pool_x, pool_y = _pool_images(setup)
    evaluator = train_evaluator(pool_x, pool_y, num_classes=setup.dataset.num_classes,
                                generator=torch.Generator().manual_seed(0), epochs=cfg.eval.evaluator_epochs,
                                cache_dir=evaluator_cache_dir() if cache_dir is None else cache_dir,
                                cache_key=evaluator_cache_key(cfg.data.dataset, pool_x, pool_y,
                                                              epochs=cfg.eval.evaluator_epochs))
    test_idx = setup.partition.test_indices
    metrics, grids = [], {}
    for client in clients:
        if progress:
            progress("sample_client", {"client": client.client_id})
        sx, sy = sample_client(strategy, client, setup, per_class=cfg.eval.samples_per_class,
                               generator=generator, device=device)
        test_x = setup.dataset.images[test_idx]
        if cfg.data.dataset == "colored-digits":
            test_x = apply_tint(test_x, client_tint(client.index, setup.partition.num_clients))
        minority = minority_classes(client.y.cpu().numpy(), num_classes=setup.dataset.num_classes)
        # The downstream CNN starts alike for every client and run (as the evaluator
        # does): its accuracy is a function of the synthetic samples alone.
        metrics.append(evaluate_client(client_id=client.client_id, evaluator=evaluator, synth_x=sx, synth_y=sy,
                                       test_x=test_x, test_y=setup.dataset.labels[test_idx],
                                       minority_classes=minority, num_classes=setup.dataset.num_classes,
                                       cnn_generator=torch.Generator().manual_seed(0)))
        grids[client.client_id] = sx[:: cfg.eval.samples_per_class]  # one per class
    return metrics, summarize(metrics), grids
