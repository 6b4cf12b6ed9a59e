"""Public pretraining: the models start from public data before any private step.

Public data holds no client's records, so training on it is charged to no
ledger; what a run used is recorded instead (the manifest's `public` entry,
`public_pretraining.json`) and named in the privacy statement's notices. The
public images are brought to the private data's shape: grey images gain the
private data's channel count as equal channels (colour, where the dataset has
one, stays a property of each client: colored-digits tints afterwards).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from securediff.config import Config
from securediff.data import Dataset, load_dataset
from securediff.data import font_digits as fonts
from securediff.errors import ConfigError
from securediff.federation.setup import RunSetup
from securediff.federation.training import train_steps
from securediff.rng import RandomSource

LOSS_POINTS = 10  # the loss curve's resolution: mean loss over each tenth of the steps


def public_provenance(setup: RunSetup) -> dict[str, Any] | None:
    """The manifest's `public` entry: which public data, and how it was made."""
    p = setup.config.public
    if not p.dataset:
        return None
    c, h, _ = setup.dataset.image_shape
    if p.dataset == "font-digits":
        out = fonts.provenance(size=h, channels=c, per_class=p.per_class)
    else:
        out = {"dataset": p.dataset, "path": p.path or None}
    return {**out, "pretraining": {"steps": p.steps, "timesteps": f"1..{setup.config.diffusion.T}",
                                   "models": "the shared model; every personal model starts as its copy"}}


def public_notice(provenance: dict[str, Any]) -> str:
    """The privacy statement's line about the public data."""
    if provenance["dataset"] == "font-digits":
        families = sorted({_family(name) for name in provenance["fonts"]})
        aug = provenance["augmentations"]
        what = (f"font-digits (fonts {', '.join(families)}: {len(provenance['fonts'])} files from "
                f"{provenance['font_source']}; augmentations shift +-{aug['shift_fraction']:g} of the size, "
                f"scale {aug['scale'][0]:g}-{aug['scale'][1]:g}, rotation +-{aug['rotation_degrees']:g} degrees, "
                f"stroke width {aug['stroke_width_px'][0]}-{aug['stroke_width_px'][1]} px)")
    else:
        what = f"{provenance['dataset']} ({provenance.get('path') or 'built-in'})"
    return f"public data: {what}, used for pretraining; no privacy cost, no guarantee needed"


def _family(font_file: str) -> str:
    name = font_file.removesuffix(".ttf").split("-")[0]
    if name.startswith("cm"):
        return "Computer Modern"
    if name.startswith("STIX"):
        return "STIX General"
    return {"DejaVuSans": "DejaVu Sans", "DejaVuSerif": "DejaVu Serif",
            "DejaVuSansMono": "DejaVu Sans Mono"}.get(name, name)


def load_public(setup: RunSetup, *, generator: np.random.Generator) -> Dataset:
    """The public data at the private data's shape (C, H, W) and classes."""
    p, private = setup.config.public, setup.dataset
    c, h, w = private.image_shape
    if p.dataset == "font-digits":
        return fonts.render_font_digits(size=h, channels=c, per_class=p.per_class, generator=generator)
    public = load_dataset(p.dataset, path=p.path or None)
    pc, ph, pw = public.image_shape
    if (ph, pw) != (h, w) or public.num_classes != private.num_classes or pc not in (1, c):
        raise ConfigError(f"public.dataset = {p.dataset!r} holds {pc}x{ph}x{pw} images of "
                          f"{public.num_classes} classes; the private data needs {c}x{h}x{w} and "
                          f"{private.num_classes} classes")
    images = np.repeat(public.images, c // pc, axis=1)
    return Dataset(name=public.name, images=images, labels=public.labels,
                   num_classes=public.num_classes, class_names=public.class_names)


def pretrain_public(model: nn.Module, setup: RunSetup, *, source: RandomSource, device: torch.device
                    ) -> dict[str, Any]:
    """Train `model` on the public data over every timestep; returns the loss curve.
    `source` gives the augmentations and the training draws (public: nothing to hide)."""
    cfg: Config = setup.config
    data = load_public(setup, generator=source.child("data").numpy_generator())
    x = torch.from_numpy(data.images).to(device)
    y = torch.from_numpy(data.labels).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.training.lr)
    generator = source.child("training").torch_generator()
    steps = cfg.public.steps
    bounds = np.linspace(0, steps, min(LOSS_POINTS, steps) + 1).round().astype(int)
    curve = []
    # One intra-op thread on CPU, as the client workers use (federation/parallel.py):
    # on the shared 2 cores a tiny step on two threads took 2.5 s instead of 0.04 s.
    saved = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            curve.append(train_steps(
                model, optimizer, x, y, steps=int(hi - lo), batch_size=cfg.training.batch_size,
                schedule=setup.schedule, start=0, end=setup.schedule.T, generator=generator,
                null_label=setup.spec.null_label, label_dropout=cfg.diffusion.label_dropout))
    finally:
        torch.set_num_threads(saved)
    return {"dataset": data.name, "records": len(data), "steps": steps, "loss_curve": curve,
            "loss_first": curve[0], "loss_last": curve[-1]}
