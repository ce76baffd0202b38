"""The interface every anomaly model implements.

A model sees images in its model frame, ``(B, 1, S, S)`` float32 in [0, 1], and answers three
questions: how to train on normals (:meth:`AnomalyModel.training_loss`), what a normal-looking
version of the input is (:meth:`AnomalyModel.reconstruct`) and where the input departs from
normal (:meth:`AnomalyModel.anomaly_map`, higher = more anomalous, ``(B, 1, S, S)``).

Everything needed to rebuild a model is in ``model.config`` (the constructor's keyword
arguments), so a detector file stores ``(method, config, state_dict)`` and nothing else.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from anatomix.errors import UsageError


class AnomalyModel(nn.Module):
    """Base class: a reconstruction model fitted on normal images only.

    Subclasses set ``method`` and fill ``self.config`` with their constructor arguments.
    """

    method: str = "base"
    #: the residual that :meth:`anomaly_map` computes when asked for ``"auto"``
    native_residual: str = "l2"
    #: False for a model that gives no image reconstruction (``rd``): its only residual is ``auto``
    reconstructs: bool = True

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = int(image_size)
        self.config: dict[str, Any] = {"image_size": self.image_size}

    # -- to implement ---------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss on a batch of normal images ``(B, 1, S, S)``; returns ``(loss, logs)``."""
        raise NotImplementedError

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Normal-looking version of ``x``: ``(B, 1, S, S)`` in about [0, 1]."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------
    def native_map(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own residual (default: squared pixel error)."""
        return (x - self.reconstruct(x)) ** 2

    def anomaly_map(self, x: torch.Tensor, residual: str = "auto") -> torch.Tensor:
        """Residual map ``(B, 1, S, S)``, higher = more anomalous.

        Args:
            x: images ``(B, 1, S, S)`` in [0, 1], model frame.
            residual: ``auto`` (the model's own map, e.g. uncertainty-weighted error for
                ``ae`` or the multi-mask error for ``mae``), ``l2``, ``l1``, ``ssim``
                (``(1 - SSIM) / 2``, 7x7 Gaussian window) or ``l2+ssim`` (their sum).
        """
        from anatomix.anomaly.scoring import residual_map

        if residual == "auto":
            return self.native_map(x)
        if residual == "feature":
            return self.feature_residual(x, self.reconstruct(x))
        return residual_map(x, self.reconstruct(x), residual)

    def feature_residual(self, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        """Feature-level error: ``1 - cos`` between the model's own conv-encoder features of the
        image and of its reconstruction, at every encoder stage, upsampled and averaged.

        Needs a convolutional ``self.encoder`` (``ae``, ``memae``, ``squid``); ``mae`` has none.
        """
        import torch.nn.functional as F

        enc = getattr(self, "encoder", None)
        if enc is None:
            raise UsageError(f"{self.method}: no convolutional encoder for the 'feature' residual")
        stages = list(enc.children())
        if stages and isinstance(stages[0], nn.Sequential) and len(stages) <= 2 and not isinstance(stages[0][0], nn.Conv2d):
            stages = list(stages[0].children())  # memae: (encoder, 1x1 projection)
        out = torch.zeros_like(x)
        a, b = x, rec
        n = 0
        for st in stages:
            a, b = st(a), st(b)
            if a.dim() != 4 or a.shape[-1] < 2:
                continue
            d = 1 - F.cosine_similarity(a, b, dim=1, eps=1e-6)[:, None]
            out = out + F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
            n += 1
        return out / max(n, 1)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


def conv_block(cin: int, cout: int, down: bool) -> nn.Sequential:
    """3x3 conv (stride 2 when ``down``) + BatchNorm + LeakyReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


def up_block(cin: int, cout: int) -> nn.Sequential:
    """4x4 stride-2 transposed conv (x2 upsampling) + BatchNorm + LeakyReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


def conv_encoder(channels: list[int], in_ch: int = 1) -> nn.Sequential:
    """One stride-2 conv block per entry, ``in_ch -> channels[0] -> ...``: each halves the side."""
    layers, c = [], in_ch
    for co in channels:
        layers.append(conv_block(c, co, down=True))
        c = co
    return nn.Sequential(*layers)


def conv_decoder(channels: list[int], out_ch: int) -> nn.Sequential:
    """Transposed-conv blocks that mirror :func:`conv_encoder`, then a 3x3 conv to ``out_ch``."""
    layers = []
    rev = list(reversed(channels))
    for i, c in enumerate(rev):
        co = rev[i + 1] if i + 1 < len(rev) else rev[-1]
        layers.append(up_block(c, co))
    layers.append(nn.Conv2d(rev[-1], out_ch, 3, padding=1))
    return nn.Sequential(*layers)
