import pytest
import torch
from opacus.validators import ModuleValidator

from securediff.models import UNet, UNetSpec


@pytest.mark.parametrize("spec", [UNetSpec(), UNetSpec(in_channels=3, channel_mults=(1, 2, 2), attention=True),
                                  UNetSpec(image_size=28, channel_mults=(1, 2), base_channels=16)])
def test_unet_shapes_and_opacus_validation(spec):
    model = UNet(spec)
    assert ModuleValidator.validate(model, strict=False) == []
    x = torch.randn(4, spec.in_channels, spec.image_size, spec.image_size)
    out = model(x, torch.tensor([1, 10, 500, 1000]), torch.tensor([0, 1, 2, spec.null_label]))
    assert out.shape == x.shape


def test_label_conditioning_changes_the_output():
    torch.manual_seed(0)
    model = UNet(UNetSpec(base_channels=8))
    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([100, 100])
    a = model(x, t, torch.tensor([0, 0]))
    b = model(x, t, torch.tensor([3, 3]))
    assert not torch.allclose(a, b)
