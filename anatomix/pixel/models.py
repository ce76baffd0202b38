"""Dense (pixel) segmentation networks: MONAI ``UNet`` / ``FlexibleUNet`` and
segmentation-models-pytorch architectures behind one factory.

Every network takes a (B, 1, S, S) grayscale image and returns (B, C, S, S) logits, one
channel per structure (multi-label: lungs and heart overlap in SCR, so each channel gets its
own sigmoid). Nothing is downloaded: MONAI backbones are built with ``pretrained=False`` and
smp encoders with ``encoder_weights=None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Sequence, Tuple

import torch

from anatomix.anatomy import STRUCTURE_KEYS
from anatomix.errors import UsageError
from anatomix.registry import Registry


def _monai_unet(in_channels: int, out_channels: int, channels: Tuple[int, ...] = (16, 32, 64, 128, 256),
                num_res_units: int = 2, dropout: float = 0.0, **kw: Any) -> torch.nn.Module:
    from monai.networks.nets import UNet

    channels = tuple(channels)
    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=num_res_units, dropout=dropout,
                norm="batch", **kw)


def _refuse_download(option: str, value: Any) -> None:
    """anatomix never downloads weights: asking for pretrained encoders is an error, not a no-op."""
    if value:
        raise UsageError(f"{option}={value!r} would download weights; anatomix builds every model "
                         f"from scratch (train it with `anatomix train pixel`)")


def _monai_flexible_unet(in_channels: int, out_channels: int, backbone: str = "efficientnet-b0",
                         **kw: Any) -> torch.nn.Module:
    from monai.networks.nets import FlexibleUNet

    _refuse_download("pretrained", kw.pop("pretrained", False))
    return FlexibleUNet(in_channels=in_channels, out_channels=out_channels, backbone=backbone,
                        pretrained=False, spatial_dims=2, **kw)


def _smp(arch: str) -> Callable[..., torch.nn.Module]:
    def build(in_channels: int, out_channels: int, encoder_name: str = "resnet18", **kw: Any) -> torch.nn.Module:
        import segmentation_models_pytorch as smp

        _refuse_download("encoder_weights", kw.pop("encoder_weights", None))
        return smp.create_model(arch, encoder_name=encoder_name, encoder_weights=None,
                                in_channels=in_channels, classes=out_channels, **kw)

    build.__doc__ = f"segmentation-models-pytorch ``{arch}`` (``encoder_weights=None``)."
    return build


_SMP_ARCHS = ("unet", "unetplusplus", "manet", "linknet", "fpn", "pspnet", "deeplabv3",
              "deeplabv3plus", "pan", "upernet", "segformer")

BUILDERS: Registry[Callable[..., torch.nn.Module]] = Registry("pixel model")
"""Registry name -> builder ``(in_channels, out_channels, **kwargs) -> nn.Module``."""
BUILDERS.register("monai_unet", _monai_unet)
BUILDERS.register("flexible_unet", _monai_flexible_unet)
for _arch in _SMP_ARCHS:
    BUILDERS.register(f"smp_{_arch}", _smp(_arch))


def pixel_model_names() -> Tuple[str, ...]:
    """The names :func:`build_pixel_model` accepts."""
    return tuple(sorted(BUILDERS))


def build_pixel_model(name: str, in_channels: int = 1, out_channels: int = len(STRUCTURE_KEYS),
                      **kwargs: Any) -> torch.nn.Module:
    """Build a dense segmentation network by name.

    Args:
        name: one of :func:`pixel_model_names` (``monai_unet``, ``flexible_unet``,
            ``smp_unet``, ``smp_fpn``, ...).
        in_channels: input channels (1: grayscale radiographs).
        out_channels: output channels, one per structure.
        **kwargs: passed to the architecture (e.g. ``channels`` for ``monai_unet``,
            ``encoder_name`` for ``smp_*``, ``backbone`` for ``flexible_unet``).

    Returns:
        A module mapping (B, in_channels, S, S) to (B, out_channels, S, S) logits.

    Raises:
        UsageError: for an unknown name; the message lists the valid names.
    """
    return BUILDERS.get(name)(in_channels, out_channels, **kwargs)


class MeanOfMembers(torch.nn.Module):
    """A deep ensemble as one network: the members' sigmoid probabilities are averaged.

    Maps (B, 1, S, S) to (B, C, S, S) logits whose sigmoid is the members' mean probability
    (clipped to [1e-6, 1 - 1e-6]), so that inference, export and post-processing treat it as
    any single pixel model.
    """

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(m(x)) for m in self.members]).mean(0).clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)


@dataclass
class PixelConfig:
    """Everything needed to rebuild a pixel model and feed it (saved in its checkpoint).

    Attributes:
        arch: a :func:`pixel_model_names` name.
        image_size: side of the square model frame (preprocessing:
            :func:`anatomix.data.preprocess.to_model_frame`).
        keys: structure of each output channel.
        threshold: probability threshold of the masks.
        kwargs: architecture keyword arguments.
        crop_borders: preprocessing crops the image to its exposed field first
            (:func:`anatomix.data.preprocess.exposed_field`).
        members: number of networks of this architecture averaged as one
            (:class:`MeanOfMembers`; 1: a single network).
    """

    arch: str = "monai_unet"
    image_size: int = 256
    keys: Tuple[str, ...] = STRUCTURE_KEYS
    threshold: float = 0.5
    kwargs: Dict[str, Any] = field(default_factory=dict)
    crop_borders: bool = False
    members: int = 1

    def build(self) -> torch.nn.Module:
        nets = [build_pixel_model(self.arch, 1, len(self.keys), **self.kwargs) for _ in range(self.members)]
        return nets[0] if self.members == 1 else MeanOfMembers(nets)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["keys"] = list(self.keys)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PixelConfig":
        d = dict(d)
        d["keys"] = tuple(d.get("keys", STRUCTURE_KEYS))
        return cls(**d)
