"""Pixel model builders: shapes, the factory's error, no downloads."""

import pytest
import torch

from anatomix.pixel.models import PixelConfig, build_pixel_model, pixel_model_names


@pytest.mark.parametrize("name,kwargs", [
    ("monai_unet", {"channels": (4, 8, 16), "num_res_units": 1}),
    ("flexible_unet", {"backbone": "efficientnet-b0"}),
    ("smp_unet", {"encoder_name": "resnet18"}),
    ("smp_fpn", {"encoder_name": "resnet18"}),
])
def test_logits_shape_one_channel_per_structure(name, kwargs):
    torch.manual_seed(0)
    model = build_pixel_model(name, in_channels=1, out_channels=3, **kwargs).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 1, 64, 64))
    assert y.shape == (2, 3, 64, 64)
    assert torch.isfinite(y).all()


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_pixel_model("not_a_net")
    for name in ("monai_unet", "flexible_unet", "smp_unet", "smp_deeplabv3plus"):
        assert name in str(e.value)
    assert set(pixel_model_names()) >= {"monai_unet", "flexible_unet", "smp_unet"}


def test_pretrained_requests_are_refused_never_downloaded():
    for name, option in (("smp_unet", "encoder_weights"), ("flexible_unet", "pretrained")):
        with pytest.raises(ValueError, match="download"):
            build_pixel_model(name, **{option: "imagenet" if option == "encoder_weights" else True})
    m = build_pixel_model("smp_unet", encoder_name="resnet18", encoder_weights=None)
    assert m.encoder.conv1.in_channels == 1


def test_config_round_trip_rebuilds_same_architecture():
    cfg = PixelConfig(arch="monai_unet", image_size=64, kwargs={"channels": [4, 8], "num_res_units": 0})
    again = PixelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    a, b = cfg.build(), again.build()
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
