"""``memae``: autoencoder with a memory module of normal prototypes (Gong et al., ICCV 2019).

The encoder's feature map is rebuilt, location by location, as a sparse convex combination of
``mem_size`` learned prototypes; since the prototypes are fitted on normals, abnormal features
cannot be copied through and get reconstructed as something normal.

.. math::
    w_i = \\mathrm{softmax}_i(z \\cdot m_i),\\quad
    \\hat w_i = \\frac{\\max(w_i - \\lambda, 0)\\, w_i}{|w_i - \\lambda| + \\epsilon},\\quad
    \\hat z = \\frac{\\sum_i \\hat w_i m_i}{\\lVert \\hat w \\rVert_1}

with the entropy of :math:`\\hat w` added to the loss (weight ``entropy_weight``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anatomix.anomaly.models.base import AnomalyModel, conv_decoder, conv_encoder


class MemoryModule(nn.Module):
    """Hard-shrinkage memory addressing over ``(B, C, h, w)`` features.

    Args:
        mem_size: number of prototypes N.
        dim: feature channels C.
        shrink: hard-shrinkage threshold lambda (MemAE uses 1/N .. 3/N).

    Shapes:
        input ``(B, C, h, w)`` -> (output ``(B, C, h, w)``, weights ``(B, h, w, N)``).
    """

    def __init__(self, mem_size: int, dim: int, shrink: float | None = None) -> None:
        super().__init__()
        self.memory = nn.Parameter(torch.empty(mem_size, dim))
        self.shrink = 1.0 / mem_size if shrink is None else float(shrink)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.memory, -1.0 / self.memory.shape[1] ** 0.5, 1.0 / self.memory.shape[1] ** 0.5)

    def forward(self, z: torch.Tensor):
        b, c, h, w = z.shape
        q = z.permute(0, 2, 3, 1).reshape(-1, c)
        att = F.softmax(q @ self.memory.t(), dim=1)
        if self.shrink > 0:
            att = F.relu(att - self.shrink) * att / ((att - self.shrink).abs() + 1e-12)
            att = att / att.sum(1, keepdim=True).clamp_min(1e-12)
        out = (att @ self.memory).view(b, h, w, c).permute(0, 3, 1, 2)
        return out, att.view(b, h, w, -1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mem_size={self.memory.shape[0]}, dim={self.memory.shape[1]}, shrink={self.shrink:.4g})"


class MemAE(AnomalyModel):
    """Conv encoder -> memory-addressed feature map -> conv decoder.

    Args:
        image_size: side S of the input (divisible by ``2 ** len(channels)``).
        channels: encoder widths (one stride-2 stage each).
        dim: channels of the addressed feature map (1x1 projection of the encoder output).
        mem_size: number of memory prototypes.
        entropy_weight: weight of the addressing-entropy loss (MemAE: 2e-4).
        uncertainty: also predict a per-pixel log-variance (AE-U likelihood) and use the
            variance-normalised error as the native map.
    """

    method = "memae"

    def __init__(self, image_size: int = 64, channels: Sequence[int] = (32, 64, 128, 128),
                 dim: int = 64, mem_size: int = 256, entropy_weight: float = 2e-4,
                 uncertainty: bool = True) -> None:
        super().__init__(image_size)
        channels = [int(c) for c in channels]
        self.config.update(channels=channels, dim=int(dim), mem_size=int(mem_size),
                           entropy_weight=float(entropy_weight), uncertainty=bool(uncertainty))
        self.uncertainty = bool(uncertainty)
        self.entropy_weight = float(entropy_weight)
        self.encoder = nn.Sequential(conv_encoder(channels), nn.Conv2d(channels[-1], dim, 1))
        self.memory = MemoryModule(mem_size, dim)
        self.expand = nn.Sequential(nn.Conv2d(dim, channels[-1], 1), nn.LeakyReLU(0.2, inplace=True))
        self.decoder = conv_decoder(channels, 2 if self.uncertainty else 1)

    def _decode(self, x):
        z, att = self.memory(self.encoder(x))
        out = self.decoder(self.expand(z))
        rec = torch.sigmoid(out[:, :1])
        logvar = out[:, 1:2].clamp(-10, 10) if self.uncertainty else None
        return rec, logvar, att

    def reconstruct(self, x):
        return self._decode(x)[0]

    def training_loss(self, x):
        rec, logvar, att = self._decode(x)
        err = (x - rec) ** 2
        rec_loss = err.mean() if logvar is None else (err * torch.exp(-logvar) + logvar).mean()
        ent = (-att * torch.log(att + 1e-12)).sum(-1).mean()
        return rec_loss + self.entropy_weight * ent, {"mse": float(err.detach().mean()), "entropy": float(ent.detach())}

    def native_map(self, x):
        rec, logvar, _ = self._decode(x)
        err = (x - rec) ** 2
        return err if logvar is None else err * torch.exp(-logvar)
