"""Denoiser networks."""

from securediff.models.unet import UNet, UNetSpec

__all__ = ["UNet", "UNetSpec"]
