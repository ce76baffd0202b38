"""``ae``: convolutional autoencoder with a small dense latent.

MedIAnomaly (Cai et al., 2024) finds that a plain AE with a small bottleneck (4-16) beats larger
ones on chest X-rays at 64-128 px. With ``uncertainty=True`` (the default) the decoder also
predicts a per-pixel log-variance and the model is trained with the heteroscedastic Gaussian
likelihood of AE-U (Mao et al., MICCAI 2020); its native map is the variance-normalised error
``(x - x_hat)^2 / sigma^2``, which down-weights edges and bones that every AE reconstructs
badly on normals too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anatomix.anomaly.models.base import AnomalyModel, conv_decoder, conv_encoder
from anatomix.errors import UsageError


class ConvAE(AnomalyModel):
    """Conv encoder -> dense latent -> conv decoder.

    Args:
        image_size: side S of the square input (divisible by ``2 ** len(channels)``).
        latent: bottleneck width (MedIAnomaly: 4-16 works best).
        channels: encoder widths, one stride-2 stage each.
        uncertainty: also predict log-variance (AE-U) and use it in loss and map.
        ssim_weight: add ``ssim_weight * (1 - SSIM)`` (7x7 Gaussian window) to the loss, a
            structural term that MedIAnomaly finds helpful for reconstruction AEs.

    Shapes:
        input ``(B, 1, S, S)`` in [0, 1]; :meth:`reconstruct` ``(B, 1, S, S)``.
    """

    method = "ae"

    def __init__(self, image_size: int = 64, latent: int = 16,
                 channels: Sequence[int] = (32, 64, 128, 128), uncertainty: bool = True,
                 ssim_weight: float = 0.0) -> None:
        super().__init__(image_size)
        channels = [int(c) for c in channels]
        self.config.update(latent=int(latent), channels=channels, uncertainty=bool(uncertainty))
        if ssim_weight:
            self.config["ssim_weight"] = float(ssim_weight)
        self.ssim_weight = float(ssim_weight)
        self.uncertainty = bool(uncertainty)
        self.side = image_size // 2 ** len(channels)
        if self.side * 2 ** len(channels) != image_size:
            raise UsageError(f"image_size {image_size} is not divisible by {2 ** len(channels)}")
        flat = channels[-1] * self.side ** 2
        self.encoder = conv_encoder(channels)
        self.to_latent = nn.Linear(flat, latent)
        self.from_latent = nn.Sequential(nn.Linear(latent, flat), nn.LeakyReLU(0.2, inplace=True))
        self.decoder = conv_decoder(channels, 2 if self.uncertainty else 1)
        self._c = channels[-1]

    def _decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.to_latent(self.encoder(x).flatten(1))
        h = self.from_latent(z).view(-1, self._c, self.side, self.side)
        out = self.decoder(h)
        rec = torch.sigmoid(out[:, :1])
        logvar = out[:, 1:2].clamp(-10, 10) if self.uncertainty else None
        return rec, logvar

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._decode(x)[0]

    def training_loss(self, x):
        rec, logvar = self._decode(x)
        err = (x - rec) ** 2
        if logvar is None:
            loss = err.mean()
        else:
            loss = (err * torch.exp(-logvar) + logvar).mean()
        if self.ssim_weight:
            from anatomix.anomaly.scoring import ssim_map

            loss = loss + self.ssim_weight * (1 - ssim_map(x, rec)).mean()
        return loss, {"mse": float(err.detach().mean())}

    def native_map(self, x):
        rec, logvar = self._decode(x)
        err = (x - rec) ** 2
        return err if logvar is None else err * torch.exp(-logvar)
