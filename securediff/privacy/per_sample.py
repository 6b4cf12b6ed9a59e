"""Clipped sums of per-sample gradients in one forward and one backward pass.

Opacus (hooks mode) materialises a (batch x parameters) tensor of per-sample
gradients and then walks it several times: at batch 256 on the default
480k-parameter UNet that is 0.5 GB per step, and the step costs about 10x a
plain one on this machine (docs/performance.md). This engine instead:

1. records each trainable layer's input activation and output in forward hooks;
2. takes `torch.autograd.grad` with respect to those outputs only, so autograd
   skips every weight gradient of the plain backward pass;
3. per layer, gets each sample's squared gradient norm either from the
   materialised per-sample gradient or, where cheaper, from the Gram matrices
   of activations and output gradients ("ghost norm", Goodfellow 2015; Li et
   al. 2022; Bu et al. 2023 choose per layer the same way);
4. builds the sum of clipped gradients as one weighted contraction per layer
   ("book-keeping", Bu et al. 2023): no second backward pass.

With noise multiplicity K the K copies of a sample are folded into the
position axis with weight 1/K, so the per-sample gradient is the mean of the
K per-copy gradients and is clipped once (DPDM, Dockhorn et al. 2022).

Supported layers: Linear, Conv2d and ConvTranspose2d (groups 1), GroupNorm,
Embedding. tests/privacy/test_per_sample.py checks each against Opacus'
per-sample gradients and against explicit per-sample backward passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from securediff.errors import ConfigError, PrivacyError

SUPPORTED = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.GroupNorm, nn.Embedding)

# A layer's contribution: squared per-sample norms (b,) and, given the clip
# factors (b,), the clipped sums of its parameters' gradients.
Summer = Callable[[torch.Tensor], list[torch.Tensor]]


class UnsupportedLayerError(ConfigError):
    """A trainable layer this engine has no per-sample gradient rule for."""


@dataclass
class _Call:
    module: nn.Module
    activation: torch.Tensor
    output: torch.Tensor


def _outer_norms_and_summer(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Summer]:
    """Per-sample gradients are x_b @ y_b^T with x: (b, P, S), y: (b, Q, S).

    Materialising costs P*Q*S per sample, the ghost norm S*S*(P+Q): take the
    cheaper. The clipped sum is one contraction over (b, S) either way.
    """
    b, p, s = x.shape
    q = y.shape[1]
    if s * (p + q) < p * q:
        gram_x = torch.bmm(x.transpose(1, 2), x)
        gram_y = torch.bmm(y.transpose(1, 2), y)
        norms2 = (gram_x * gram_y).sum(dim=(1, 2))

        def summer(c: torch.Tensor) -> list[torch.Tensor]:
            weighted = (x * c[:, None, None]).permute(1, 0, 2).reshape(p, b * s)
            return [weighted @ y.permute(0, 2, 1).reshape(b * s, q)]

        return norms2, summer
    per_sample = torch.bmm(x, y.transpose(1, 2))
    norms2 = per_sample.pow(2).sum(dim=(1, 2))
    return norms2, lambda c: [torch.einsum("b,bpq->pq", c, per_sample)]


def _bias_norms_and_summer(per_sample: torch.Tensor) -> tuple[torch.Tensor, Summer]:
    return per_sample.pow(2).sum(dim=1), lambda c: [c @ per_sample]


def _fold(t: torch.Tensor, b: int, k: int) -> torch.Tensor:
    """(b*k, C, *positions) -> (b, C, k * positions): copies become positions."""
    t = t.reshape(b, k, t.shape[1], -1)
    if k == 1:
        return t[:, 0]
    return t.permute(0, 2, 1, 3).reshape(b, t.shape[2], -1)


def _linear(m: nn.Linear, a: torch.Tensor, g: torch.Tensor, b: int, k: int) -> tuple[torch.Tensor, Summer]:
    # (b*k, ..., features) -> (b, features, k * positions)
    a = _fold(a.reshape(a.shape[0], -1, a.shape[-1]).transpose(1, 2), b, k)
    g = _fold(g.reshape(g.shape[0], -1, g.shape[-1]).transpose(1, 2), b, k)
    return _with_bias(m, *_outer_norms_and_summer(g, a), g)


def _conv2d(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, b: int, k: int) -> tuple[torch.Tensor, Summer]:
    if m.groups != 1 or isinstance(m.padding, str) or m.padding_mode != "zeros":
        raise UnsupportedLayerError("Conv2d with groups != 1, string padding or non-zero padding mode")
    cout, cin, kh, kw = m.weight.shape
    if (kh, kw) == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0):
        # A 1x1 convolution is a linear layer applied at every position.
        norms2, summer = _outer_norms_and_summer(_fold(g, b, k), _fold(a, b, k))
        shape = m.weight.shape
        return _with_bias(m, norms2, lambda c: [w.reshape(shape) for w in summer(c)], _fold(g, b, k))
    if _conv_uses_ghost(cin, kh, kw, g.shape[2] * g.shape[3]):
        norms2 = _conv_ghost_norms2(m, a, g, b, k)

        def summer(c: torch.Tensor) -> list[torch.Tensor]:
            # The weight gradient of the plain backward pass, with each sample's
            # output gradient scaled by its clip factor: native and memory-light.
            scaled = g * c.repeat_interleave(k)[:, None, None, None]
            return [torch.nn.grad.conv2d_weight(a, m.weight.shape, scaled, m.stride, m.padding, m.dilation)]
    else:
        # All b per-sample gradients in one grouped weight-gradient call: the b
        # samples are the groups and their k copies the batch (summed).
        per_copy = a.reshape(b, k, cin, *a.shape[2:]).transpose(0, 1).reshape(k, b * cin, *a.shape[2:])
        grads = g.reshape(b, k, cout, *g.shape[2:]).transpose(0, 1).reshape(k, b * cout, *g.shape[2:])
        per_sample = torch.nn.grad.conv2d_weight(
            per_copy, (b * cout, cin, kh, kw), grads, m.stride, m.padding, m.dilation, groups=b
        ).reshape(b, -1)
        norms2 = per_sample.pow(2).sum(dim=1)

        def summer(c: torch.Tensor) -> list[torch.Tensor]:
            return [(c @ per_sample).reshape(m.weight.shape)]

    return _with_bias(m, norms2, summer, _fold(g, b, k))


def _conv_uses_ghost(cin: int, kh: int, kw: int, out_positions: int) -> bool:
    """Ghost norm or grouped materialisation, from timings on this project's
    CPU (oneDNN, docs/performance.md): the grouped weight gradient is 2-3x
    faster than the ghost norm on grids of 8x8 and more with small patches
    (cin*kh*kw <= 512) and 10-30x slower on 4x4 grids."""
    return out_positions < 64 or cin * kh * kw > 512


def _conv_ghost_norms2(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, b: int, k: int) -> torch.Tensor:
    """Squared per-sample weight-gradient norms without unfolding the input.

    ||sum_l g_l u_l^T||^2 = sum_{l,l'} <g_l, g_l'> <u_l, u_l'>, u_l the input
    patch under output position l. <u_l, u_l'> is the sum over the kernel
    offsets d of <x_(p_l + d), x_(p_l' + d)>: kh*kw gathers from the Gram
    matrix of the padded input's pixels, which is far smaller than the patches.
    """
    kh, kw = m.kernel_size
    (sh, sw), (dh, dw), (ph, pw) = m.stride, m.dilation, m.padding
    h, w = a.shape[2:]
    ho, wo = g.shape[2:]
    pixels = _fold(a, b, k)  # (b, cin, k * h * w)
    pixel_gram = torch.bmm(pixels.transpose(1, 2), pixels).reshape(b, k, h, w, k, h, w)
    # Padding adds zero pixels: pad the Gram rather than the (larger) input.
    pixel_gram = F.pad(pixel_gram, (pw, pw, ph, ph, 0, 0, pw, pw, ph, ph))
    out_grads = _fold(g, b, k)  # (b, cout, k * ho * wo)
    grad_gram = torch.bmm(out_grads.transpose(1, 2), out_grads)
    # Sum the kernel offsets as strided views of the (b, copy, row, col, copy',
    # row', col') Gram: first over columns, then rows (6 adds instead of 9 for
    # a 3x3 kernel, and on views with longer contiguous runs).
    cols = [slice(j * dw, j * dw + (wo - 1) * sw + 1, sw) for j in range(kw)]
    by_cols = sum(pixel_gram[:, :, :, c, :, :, c] for c in cols)
    rows = [slice(i * dh, i * dh + (ho - 1) * sh + 1, sh) for i in range(kh)]
    patch_gram = sum(by_cols[:, :, r, :, :, r, :] for r in rows).reshape(grad_gram.shape)
    return (patch_gram * grad_gram).sum(dim=(1, 2))


def _conv_transpose2d(m: nn.ConvTranspose2d, a: torch.Tensor, g: torch.Tensor, b: int, k: int
                      ) -> tuple[torch.Tensor, Summer]:
    # The weight gradient of a transposed convolution is a convolution's weight
    # gradient with the roles of input and output exchanged.
    if m.groups != 1 or any(m.output_padding):
        raise UnsupportedLayerError("ConvTranspose2d with groups != 1 or output_padding")
    u = F.unfold(g, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
    if u.shape[-1] != a.shape[-1] * a.shape[-2]:
        raise UnsupportedLayerError("ConvTranspose2d whose output does not tile its input")
    norms2, summer = _outer_norms_and_summer(_fold(a, b, k), _fold(u, b, k))
    shape = m.weight.shape
    return _with_bias(m, norms2, lambda c: [w.reshape(shape) for w in summer(c)], _fold(g, b, k))


def _group_norm(m: nn.GroupNorm, a: torch.Tensor, g: torch.Tensor, b: int, k: int) -> tuple[torch.Tensor, Summer]:
    if not m.affine:
        raise UnsupportedLayerError("GroupNorm without affine parameters has nothing to train")
    normalized = F.group_norm(a, m.num_groups, eps=m.eps)
    gf = _fold(g, b, k)
    weight = (_fold(normalized, b, k) * gf).sum(dim=2)
    bias = gf.sum(dim=2)
    norms2 = weight.pow(2).sum(dim=1) + bias.pow(2).sum(dim=1)
    return norms2, lambda c: [c @ weight, c @ bias]


def _embedding(m: nn.Embedding, a: torch.Tensor, g: torch.Tensor, b: int, k: int) -> tuple[torch.Tensor, Summer]:
    if m.padding_idx is not None or m.max_norm is not None or m.sparse:
        raise UnsupportedLayerError("Embedding with padding_idx, max_norm or sparse gradients")
    idx = a.reshape(b, -1)  # (b, k * positions)
    rows = g.reshape(b, idx.shape[1], -1)
    # Two positions of one sample add up in the gradient iff they index the same row.
    same = (idx[:, :, None] == idx[:, None, :]).to(rows.dtype)
    norms2 = (same * torch.bmm(rows, rows.transpose(1, 2))).sum(dim=(1, 2))

    def summer(c: torch.Tensor) -> list[torch.Tensor]:
        out = torch.zeros_like(m.weight)
        out.index_add_(0, idx.reshape(-1), (rows * c[:, None, None]).reshape(-1, rows.shape[-1]))
        return [out]

    return norms2, summer


def _with_bias(m: nn.Module, norms2: torch.Tensor, summer: Summer, g_folded: torch.Tensor
               ) -> tuple[torch.Tensor, Summer]:
    if getattr(m, "bias", None) is None or not m.bias.requires_grad:
        return norms2, summer
    bias_norms2, bias_summer = _bias_norms_and_summer(g_folded.sum(dim=2))
    return norms2 + bias_norms2, lambda c: summer(c) + bias_summer(c)


_RULES = {nn.Linear: _linear, nn.Conv2d: _conv2d, nn.ConvTranspose2d: _conv_transpose2d,
          nn.GroupNorm: _group_norm, nn.Embedding: _embedding}


def _layer_params(m: nn.Module) -> list[nn.Parameter]:
    """The module's own trainable parameters, in the order its rule returns sums."""
    return [p for n in ("weight", "bias") if (p := getattr(m, n, None)) is not None and p.requires_grad]


class PerSampleClipper:
    """Hooks `model`; `clipped_sum` returns the sum of per-sample clipped gradients."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers: list[nn.Module] = []
        owned: set[int] = set()
        for name, m in model.named_modules():
            own = [p for p in m.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            if type(m) not in _RULES:
                raise UnsupportedLayerError(
                    f"layer {name or '<root>'} ({type(m).__name__}) has trainable parameters but no "
                    f"per-sample rule; supported: {', '.join(t.__name__ for t in SUPPORTED)}"
                )
            if {id(p) for p in own} != {id(p) for p in _layer_params(m)}:
                raise UnsupportedLayerError(f"layer {name} has parameters besides weight and bias")
            if isinstance(m, nn.GroupNorm) and len(own) != 2:
                raise UnsupportedLayerError(f"layer {name}: GroupNorm with only one of weight, bias trainable")
            self.layers.append(m)
            owned.update(id(p) for p in own)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if len(owned) != len(self.params):
            raise UnsupportedLayerError("a trainable parameter is shared between layers")
        self._calls: list[_Call] | None = None
        self._handles = [m.register_forward_hook(self._record) for m in self.layers]

    def _record(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self._calls is None:
            return
        if any(c.module is module for c in self._calls):
            raise PrivacyError(
                f"{type(module).__name__} ran twice in one forward pass; its per-sample gradient "
                "would need the cross terms of both calls, which this engine does not compute"
            )
        self._calls.append(_Call(module, args[0].detach(), output))

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def clipped_sum(self, loss_fn: Callable[..., torch.Tensor], batch: tuple[torch.Tensor, ...], b: int,
                    k: int, max_grad_norm: float, stability: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Sum over the b samples of min(1, C / ||g_b||) g_b, g_b the mean of its k
        per-copy gradients; also the b norms ||g_b||. `loss_fn(model, *batch)`
        returns the b*k per-copy losses (copies of a sample contiguous)."""
        self._calls = []
        try:
            losses = loss_fn(self.model, *batch)
            calls, self._calls = self._calls, None
        finally:
            self._calls = None
        if losses.shape != (b * k,):
            raise ConfigError(f"per_copy_loss_fn must return shape ({b * k},), got {tuple(losses.shape)}")
        live = [c for c in calls if c.output.requires_grad]
        grads = torch.autograd.grad(losses.sum(), [c.output for c in live], allow_unused=True)
        norms2 = torch.zeros(b, dtype=losses.dtype, device=losses.device)
        summers: dict[int, Summer] = {}
        for call, g in zip(live, grads, strict=True):
            if g is None:  # the output did not reach the loss
                continue
            layer_norms2, summer = _RULES[type(call.module)](call.module, call.activation, g / k, b, k)
            norms2 = norms2 + layer_norms2
            summers[id(call.module)] = summer
        norms = norms2.clamp(min=0).sqrt()
        if not bool(torch.isfinite(norms).all()):
            raise PrivacyError("a per-sample gradient is not finite; refusing to release it")
        factor = (max_grad_norm / (norms + stability)).clamp(max=1.0)
        sums: dict[int, torch.Tensor] = {}
        for m in self.layers:
            if id(m) in summers:
                for p, s in zip(_layer_params(m), summers[id(m)](factor), strict=True):
                    sums[id(p)] = s
        out = [sums.get(id(p), torch.zeros_like(p)) for p in self.params]
        return out, norms.detach()
