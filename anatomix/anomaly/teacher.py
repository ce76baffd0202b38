"""A feature teacher for the distillation detectors, pretrained here on normal radiographs only.

Nothing pretrained may be downloaded, so the teacher of :class:`~anatomix.anomaly.models.rd.ReverseDistillation`
is a compact ResNet (:class:`FeatureEncoder`) trained self-supervised on normal films by
**masked in-painting with denoising** (:class:`InpaintingPretext`): a random ~35 % of 16 px
blocks are blanked, noise is added, the film is slightly moved, and a light decoder must give
back the clean (moved) film from the encoder's deepest features alone.

Why this pretext and not a contrastive one (SimCLR, BYOL): on one CPU core a contrastive
objective needs large batches, two views per image and hundreds of epochs to stop collapsing
into global intensity cues; in-painting converges in tens of epochs with one view per image and
forces *dense* features that encode what the anatomy around a place predicts there (rib
spacing, vessel markings, heart and diaphragm borders), which is what a per-position feature
discrepancy needs. The decoder has no skip connections, so the 1/16-scale features must carry
the content.

Shapes: images ``(B, 1, S, S)`` in [0, 1], S divisible by 16. :meth:`FeatureEncoder.forward`
returns the features of its last three stages, ``(B, C1, S/4, S/4)``, ``(B, C2, S/8, S/8)``,
``(B, C3, S/16, S/16)``.

A teacher file (:func:`save_teacher`) holds ``{"format", "config", "state_dict", "meta"}`` and
loads with ``weights_only=True``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anatomix.errors import CheckpointError, UsageError

FORMAT = "anatomix-anomaly-teacher"


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm, identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(h)) + self.short(x), inplace=True)


class FeatureEncoder(nn.Module):
    """Compact ResNet: a stride-2 stem, then one stride-2 :class:`BasicBlock` per further width.

    Args:
        channels: widths ``(stem, stage1, stage2, stage3)``; the image side is divided by 2 at
            each, so S must be divisible by ``2 ** len(channels)``.

    Shapes:
        input ``(B, 1, S, S)`` in [0, 1] (standardised inside: ``(x - 0.5) / 0.25``); output the
        list of the last three stages' features (see the module docstring).
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) != 4:
            raise UsageError(f"FeatureEncoder takes 4 widths (stem + 3 stages), got {channels}")
        self.channels = channels
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(channels[0]),
                                  nn.ReLU(inplace=True))
        self.stages = nn.ModuleList(BasicBlock(a, b, 2) for a, b in zip(channels[:-1], channels[1:]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem((x - 0.5) / 0.25)
        out = []
        for st in self.stages:
            h = st(h)
            out.append(h)
        return out


def up_stage(cin: int, cout: int) -> nn.Sequential:
    """x2 upsampling: 2x2 stride-2 transposed conv + BN + ReLU, then a :class:`BasicBlock`."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), BasicBlock(cout, cout))


def corrupt(x: torch.Tensor, block: int = 16, mask_ratio: float = 0.35, noise: float = 0.05):
    """The pretext's input: blocks of ``block`` px blanked to the image mean, plus Gaussian noise.

    Args:
        x: ``(B, 1, S, S)`` in [0, 1] (S divisible by ``block``).

    Returns:
        (corrupted ``(B, 1, S, S)``, blanked-pixel mask ``(B, 1, S, S)`` float 0/1). Uses the
        global torch RNG (the fit loop seeds it per epoch, so a resumed fit repeats it).
    """
    b, _, s, _ = x.shape
    keep = (torch.rand(b, 1, s // block, s // block, device=x.device) >= mask_ratio).float()
    keep = F.interpolate(keep, scale_factor=block, mode="nearest")
    mean = x.mean((2, 3), keepdim=True)
    out = x * keep + mean * (1 - keep) + noise * torch.randn_like(x)
    return out, 1 - keep


def jitter(x: torch.Tensor, degrees: float = 8.0, scale: float = 0.08, shift: float = 0.06) -> torch.Tensor:
    """Random small rotation, zoom and shift of each image (bilinear, border padding), and a
    random gamma in [0.7, 1.4]: the positions and exposures normals come in."""
    b = x.shape[0]
    a = (torch.rand(b, device=x.device) * 2 - 1) * math.radians(degrees)
    z = 1 + (torch.rand(b, device=x.device) * 2 - 1) * scale
    t = (torch.rand(b, 2, device=x.device) * 2 - 1) * shift * 2
    theta = torch.stack([torch.stack([torch.cos(a) / z, -torch.sin(a) / z, t[:, 0]], 1),
                         torch.stack([torch.sin(a) / z, torch.cos(a) / z, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gamma = torch.exp((torch.rand(b, 1, 1, 1, device=x.device) * 2 - 1) * math.log(1.4))
    return moved.clamp(0, 1) ** gamma


class InpaintingPretext(nn.Module):
    """Masked in-painting + denoising around a :class:`FeatureEncoder` (what pretrains a teacher).

    Trainable by :func:`anatomix.anomaly.train.fit_model` (``method``, ``config``,
    :meth:`training_loss`). The decoder mirrors the encoder from its deepest features with no
    skip connections and is thrown away after pretraining.

    Args:
        image_size: side S (divisible by 16).
        channels: the encoder's widths.
    """

    method = "teacher"

    def __init__(self, image_size: int = 128, channels: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if image_size % 2 ** len(channels):
            raise UsageError(f"image_size {image_size} is not divisible by {2 ** len(channels)}")
        self.config: dict[str, Any] = {"image_size": int(image_size), "channels": channels}
        self.encoder = FeatureEncoder(channels)
        rev = channels[::-1]
        self.decoder = nn.Sequential(*[up_stage(a, b) for a, b in zip(rev[:-1], rev[1:])],
                                     nn.ConvTranspose2d(rev[-1], 8, 2, 2), nn.ReLU(inplace=True),
                                     nn.Conv2d(8, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(B, 1, S, S)`` of (corrupted) images ``(B, 1, S, S)``."""
        return torch.sigmoid(self.decoder(self.encoder(x)[-1]))

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 to the clean moved film over every pixel, plus L1 over the blanked ones."""
        target = jitter(x)
        inp, masked = corrupt(target)
        err = (self(inp) - target).abs()
        hole = (err * masked).sum() / masked.sum().clamp_min(1)
        return err.mean() + hole, {"l1": float(err.detach().mean()), "hole_l1": float(hole.detach())}


def pretrain_teacher(images, image_size: int, channels: Sequence[int] = (16, 32, 64, 128), epochs: int = 30,
                     batch_size: int = 32, lr: float = 2e-3, seed: int = 0, checkpoint: Path | None = None,
                     progress: bool = True, log=None, device: str = "cpu") -> tuple[FeatureEncoder, list[dict]]:
    """Pretrain a teacher by :class:`InpaintingPretext` on NORMAL images (resumable).

    Args:
        images: ``(N, S, S)`` float32 in [0, 1], model frame.
        checkpoint: the resumable fit checkpoint (:func:`anatomix.anomaly.train.fit_model`).

    Returns:
        (the encoder in eval mode on the CPU, the per-epoch history).
    """
    from anatomix.anomaly.train import fit_model

    torch.manual_seed(seed)
    pretext = InpaintingPretext(image_size, channels)
    history = fit_model(pretext, images, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                        checkpoint=checkpoint, progress=progress, log=log, device=device)
    return pretext.encoder.cpu().eval(), history


def save_teacher(path, encoder: FeatureEncoder, meta: dict | None = None) -> Path:
    """Write a teacher file (atomic; loads with ``weights_only=True``)."""
    from anatomix.models import save_checkpoint

    return save_checkpoint(path, {"format": FORMAT, "config": {"channels": list(encoder.channels)},
                                  "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
                                  "meta": dict(meta or {})})


def load_teacher(path) -> tuple[FeatureEncoder, dict]:
    """Read a teacher file written by :func:`save_teacher`: (encoder in eval mode, its meta).

    Raises:
        CheckpointError: missing, unreadable or not a teacher file.
    """
    from anatomix.models import load_checkpoint

    state = load_checkpoint(path)
    if state.get("format") != FORMAT:
        raise CheckpointError(path, "not an anatomix anomaly teacher")
    enc = FeatureEncoder(state["config"]["channels"])
    enc.load_state_dict(state["state_dict"])
    return enc.eval(), dict(state.get("meta") or {})
