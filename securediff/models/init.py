"""Build modules without touching torch's global RNG.

Modules are constructed on the meta device (nothing is drawn) and their
parameters are then initialised from an injected generator with PyTorch's
own default distributions, so a model's initial weights are a function of
the generator alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def init_from_generator(model: nn.Module, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            # PyTorch's default: kaiming_uniform(a=sqrt(5)), bias U(+-1/sqrt(fan_in)).
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, generator=generator)


def build(factory: Callable[[], M], *, generator: torch.Generator, device: torch.device | str = "cpu") -> M:
    """`factory()` built on the meta device, then initialised from `generator`."""
    with torch.device("meta"):
        model = factory()
    model.to_empty(device=device)
    init_from_generator(model, generator)
    return model
