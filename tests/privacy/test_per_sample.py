"""The fused per-sample engine against explicit per-sample backward passes and
against Opacus, for every layer rule and both conv branches."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import securediff.privacy.per_sample as per_sample
from securediff.diffusion.loss import diffusion_loss
from securediff.diffusion.schedule import make_schedule
from securediff.errors import PrivacyError
from securediff.models import UNet, UNetSpec
from securediff.privacy.dpsgd import DPSGD
from securediff.privacy.per_sample import PerSampleClipper, UnsupportedLayerError
from securediff.rng import RandomSource


class EveryLayer(nn.Module):
    """Each rule once: 3x3, strided, 1x1 and transposed convs, GroupNorm,
    Embedding, a Linear on vectors and one on a sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 8, 3, padding=1)
        self.norm = nn.GroupNorm(4, 8)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1, dilation=1)
        self.wide = nn.Conv2d(8, 6, 3, padding=2, dilation=2, bias=False)
        self.point = nn.Conv2d(6, 8, 1)
        self.up = nn.ConvTranspose2d(8, 4, 4, 2, 1)
        self.emb = nn.Embedding(5, 8)
        self.vec = nn.Linear(8, 8)
        self.seq = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm(self.stem(x))) + self.vec(self.emb(y))[:, :, None, None]
        h = self.point(F.silu(self.wide(self.down(h))))
        h = self.up(h)  # (b, 4, 8, 8)
        return self.seq(h.flatten(2).transpose(1, 2)).sum(dim=(1, 2))


def explicit(model: nn.Module, x, y, noise, k: int, clip: float):
    """Per-sample gradients one sample at a time (mean of its k copies)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for i in range(x.shape[0] // k):
        rows = slice(i * k, (i + 1) * k)
        loss = ((model(x[rows] + noise[rows], y[rows]) - 1.0) ** 2).sum() / k
        grads.append(torch.autograd.grad(loss, params, allow_unused=True))
    grads = [[torch.zeros_like(p) if g is None else g for g, p in zip(gi, params, strict=True)] for gi in grads]
    norms = torch.stack([torch.sqrt(sum((g**2).sum() for g in gi)) for gi in grads])
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    sums = [sum(f * gi[j] for f, gi in zip(factor, grads, strict=True)) for j in range(len(params))]
    return norms, sums


@pytest.mark.parametrize("ghost", [True, False])
@pytest.mark.parametrize("k", [1, 3])
def test_every_rule_matches_explicit_per_sample_gradients(monkeypatch, ghost: bool, k: int) -> None:
    monkeypatch.setattr(per_sample, "_conv_uses_ghost", lambda *args: ghost)
    gen = torch.Generator().manual_seed(k)
    model = EveryLayer()
    b = 5
    x = torch.randn(b, 2, 8, 8, generator=gen).repeat_interleave(k, 0)
    y = torch.randint(0, 5, (b,), generator=gen).repeat_interleave(k, 0)
    noise = torch.randn(b * k, 2, 8, 8, generator=gen)
    clip = 0.5
    ref_norms, ref_sums = explicit(copy.deepcopy(model), x, y, noise, k, clip)
    engine = PerSampleClipper(model)
    sums, norms = engine.clipped_sum(lambda m, xb, yb: (m(xb + noise, yb) - 1.0) ** 2, (x, y), b, k, clip, 1e-6)
    engine.close()
    torch.testing.assert_close(norms, ref_norms, rtol=1e-4, atol=1e-6)
    assert (ref_norms > clip).any()  # clipping is exercised
    for got, want in zip(sums, ref_sums, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2])
def test_default_unet_matches_opacus(k: int) -> None:
    spec = UNetSpec(base_channels=16, channel_mults=(1, 2), attention=True)
    schedule = make_schedule("linear", T=100)
    model = UNet(spec)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(6, 1, 8, 8, generator=gen)
    y = torch.randint(0, 11, (6,), generator=gen)
    results = []
    for mode, m in (("fused", model), ("opacus", copy.deepcopy(model))):
        noise_gen = torch.Generator().manual_seed(3)
        dp = DPSGD(model=m, optimizer=torch.optim.SGD(m.parameters(), lr=0.0), max_grad_norm=0.05,
                   noise_multiplier=0.0, expected_batch_size=6.0, source=RandomSource.insecure_from_seed(0),
                   ledger=None, noise_multiplicity=k, per_sample=mode)
        norms = dp.step(lambda mod, xb, yb, g=noise_gen: diffusion_loss(mod, xb, yb, schedule=schedule, start=0,
                                                                        end=100, generator=g), x, y)
        results.append((norms, [p.grad.clone() for p in dp.params]))
        dp.close()
    (fused_norms, fused), (opacus_norms, opacus) = results
    torch.testing.assert_close(fused_norms, opacus_norms, rtol=1e-4, atol=1e-6)
    for a, b in zip(fused, opacus, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_unsupported_layers_are_named() -> None:
    with pytest.raises(UnsupportedLayerError, match="LayerNorm"):
        PerSampleClipper(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)))
    grouped = PerSampleClipper(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(UnsupportedLayerError, match="groups"):
        grouped.clipped_sum(lambda m, x: m(x).flatten(1).sum(1), (torch.randn(2, 4, 5, 5),), 2, 1, 1.0, 1e-6)


def test_a_layer_called_twice_is_refused_and_an_unused_one_gets_zero() -> None:
    twice = nn.Linear(3, 3)
    engine = PerSampleClipper(twice)
    with pytest.raises(PrivacyError, match="twice"):
        engine.clipped_sum(lambda m, x: m(m(x)).sum(1), (torch.randn(2, 3),), 2, 1, 1.0, 1e-6)
    model = nn.ModuleDict({"used": nn.Linear(3, 1), "unused": nn.Linear(3, 1)})
    engine = PerSampleClipper(model)
    sums, norms = engine.clipped_sum(lambda m, x: m["used"](x)[:, 0], (torch.randn(4, 3),), 4, 1, 1.0, 1e-6)
    assert norms.shape == (4,) and (norms > 0).all()
    assert all(float(s.abs().sum()) == 0.0 for s in sums[2:])
    assert float(sums[0].abs().sum()) > 0.0


def test_hooks_record_nothing_outside_a_step_and_close_removes_them() -> None:
    model = nn.Linear(3, 1)
    engine = PerSampleClipper(model)
    model(torch.randn(2, 3))  # an evaluation forward pass outside clipped_sum
    assert engine._calls is None
    engine.close()
    assert not model._forward_hooks
