"""Diffusion schedules, the training loss and samplers (timesteps t = 1..T)."""

from securediff.diffusion.loss import diffusion_loss
from securediff.diffusion.sampling import SamplerSpec, sample_split
from securediff.diffusion.schedule import NoiseSchedule, make_schedule

__all__ = ["NoiseSchedule", "SamplerSpec", "diffusion_loss", "make_schedule", "sample_split"]
