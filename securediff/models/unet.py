"""A small class-conditional UNet for epsilon prediction.

Every layer is one Opacus computes per-sample gradients for (Conv2d, Linear,
GroupNorm, Embedding; no BatchNorm, no nn.MultiheadAttention), so the same
network trains with or without DP-SGD. Attention, where enabled, is linear
attention built from 1x1 convolutions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UNetSpec:
    in_channels: int = 1
    image_size: int = 8
    num_classes: int = 10
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    attention: bool = False
    groups: int = 8

    @property
    def null_label(self) -> int:
        """Label index of the unconditional model (classifier-free guidance)."""
        return self.num_classes


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class LinearAttention(nn.Module):
    """Linear attention (Katharopoulos et al. 2020) from 1x1 convolutions."""

    def __init__(self, channels: int, groups: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        q, k = q.softmax(dim=-2), k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(b, c, h, w)
        return x + self.out(out)


class UNet(nn.Module):
    def __init__(self, spec: UNetSpec) -> None:
        super().__init__()
        self.spec = spec
        ch = spec.base_channels
        emb_dim = ch * 4
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # One extra row: the null label of classifier-free guidance.
        self.label_emb = nn.Embedding(spec.num_classes + 1, emb_dim)
        self.stem = nn.Conv2d(spec.in_channels, ch, 3, padding=1)

        widths = [ch * m for m in spec.channel_mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cin = ch
        for i, w in enumerate(widths):
            self.down.append(ResBlock(cin, w, emb_dim, spec.groups))
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(w, w, 3, stride=2, padding=1))
            cin = w
        self.mid1 = ResBlock(cin, cin, emb_dim, spec.groups)
        self.mid_attn = LinearAttention(cin, spec.groups) if spec.attention else nn.Identity()
        self.mid2 = ResBlock(cin, cin, emb_dim, spec.groups)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            self.up.append(ResBlock(cin + w, w, emb_dim, spec.groups))
            first = i == 0
            self.upsample.append(nn.Identity() if first else nn.ConvTranspose2d(w, widths[i - 1], 4, 2, 1))
            cin = w if first else widths[i - 1]
        self.out_norm = nn.GroupNorm(min(spec.groups, cin), cin)
        self.out = nn.Conv2d(cin, spec.in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.spec.base_channels)) + self.label_emb(labels)
        h = self.stem(x)
        skips = []
        for block, down in zip(self.down, self.downsample, strict=True):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for block, up in zip(self.up, self.upsample, strict=True):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            h = up(h)
        return self.out(F.silu(self.out_norm(h)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
