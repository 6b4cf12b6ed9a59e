import numpy as np
import pytest
import torch
from torch import nn

from securediff.diffusion.loss import diffusion_loss
from securediff.diffusion.sampling import SamplerSpec, Segment, sample_split, segment_grid
from securediff.diffusion.schedule import linear_schedule
from securediff.errors import ConfigError


class ConstantData(nn.Module):
    """The exact epsilon-predictor when every data point of the segment equals `value`."""

    def __init__(self, schedule, start, value):
        super().__init__()
        self.abar = torch.tensor(schedule.abar)
        self.start = start
        self.value = value

    def forward(self, x, t, labels):
        rel = (self.abar[t] / self.abar[self.start]).float().view(-1, 1, 1, 1)
        return (x - rel.sqrt() * self.value) / (1 - rel).sqrt()


def test_grid_covers_segment_endpoints():
    seg = Segment(nn.Identity(), 300, 1000)
    grid = segment_grid(seg, spec=SamplerSpec("ddim", 50), T=1000)
    assert grid[0] == 1000 and grid[-1] == 300 and grid == sorted(grid, reverse=True)
    assert segment_grid(seg, spec=SamplerSpec("ancestral"), T=1000) == list(range(1000, 299, -1))


@pytest.mark.parametrize("kind", ["ddim", "ancestral"])
def test_split_sampler_recovers_point_mass(kind):
    # With an exact denoiser for data = 0.5, DDIM and ancestral sampling both land on 0.5.
    schedule = linear_schedule(200)
    t0 = 80
    personal = ConstantData(schedule, 0, 0.5)
    # The shared model's "data" is x_t0 = sqrt(abar_t0) * 0.5 (noise-free limit).
    shared = ConstantData(schedule, t0, 0.5 * float(np.sqrt(schedule.abar[t0])))
    gen = torch.Generator().manual_seed(0)
    x = sample_split([Segment(shared, t0, 200), Segment(personal, 0, t0)], torch.zeros(16, dtype=torch.long),
                     schedule=schedule, spec=SamplerSpec(kind, 40), shape=(1, 2, 2), generator=gen, null_label=10)
    assert torch.allclose(x, torch.full_like(x, 0.5), atol=1e-3)


def test_segments_must_tile():
    schedule = linear_schedule(100)
    with pytest.raises(ConfigError):
        sample_split([Segment(nn.Identity(), 50, 100), Segment(nn.Identity(), 0, 40)], torch.zeros(1, dtype=torch.long),
                     schedule=schedule, spec=SamplerSpec(), shape=(1, 2, 2), generator=torch.Generator(), null_label=1)


def test_shared_loss_inputs_come_from_the_noised_data_only():
    # The loss for the segment starting at t0 must be computable from x~ alone:
    # a model that ignores its input sees identical losses whatever clean x produced x~.
    schedule = linear_schedule(100)
    calls = []

    class Spy(nn.Module):
        def forward(self, x, t, y):
            calls.append((x.clone(), t.clone()))
            return torch.zeros_like(x)

    x_tilde = torch.randn(8, 1, 2, 2)
    diffusion_loss(Spy(), x_tilde, torch.zeros(8, dtype=torch.long), schedule=schedule, start=60, end=100,
                   generator=torch.Generator().manual_seed(1))
    x_t, t = calls[0]
    assert int(t.min()) > 60 and int(t.max()) <= 100
    rel = torch.tensor(schedule.abar)[t].float() / float(schedule.abar[60])
    z = (x_t - rel.sqrt().view(-1, 1, 1, 1) * x_tilde) / (1 - rel).sqrt().view(-1, 1, 1, 1)
    assert z.abs().max() < 6  # a standard-normal residual: x_t continues the forward process from x~
