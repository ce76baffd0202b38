"""``simsid``: SimSID-style feature in-painting with a learned space-aware memory matrix.

After Xiang et al., "Exploiting Structural Consistency of Chest Anatomy for Unsupervised
Anomaly Detection in Radiography Images" (SimSID, TPAMI 2024), the successor of SQUID, cut to
what trains on a CPU. It keeps :class:`~anatomix.anomaly.models.squid.SQUID`'s patch encoder,
neighbour in-painting, shared decoder, student-teacher feature loss and native map, and changes
the two things SimSID changes:

- **space-aware memory matrix**: every feature-map position owns ``memory_size`` *learned*
  entries (a parameter trained with the reconstruction, not SQUID's FIFO queue of recent
  features), read by soft attention; a radiograph's anatomy sits at about the same place on every
  film, so a position's memory holds what normally appears there;
- **shuffled patches**: during training a fraction ``shuffle_fraction`` of each film's patches
  trade places before encoding, and the model must still give back the *original* film and its
  features: the in-painting learns to replace content that does not belong where it is, which is
  what an anomaly looks like to it.

SimSID's realness critic is the package's :mod:`anatomix.anomaly.critic` (``critic_epochs`` of
:func:`anatomix.anomaly.train.fit_detector`, residual ``ssim+critic``). Not kept: SimSID's masked
shortcut inside the in-painting block and its transformer in-painting (a masked 3x3 convolution
here, as in ``squid``).

Shapes: input ``(B, 1, S, S)``; features ``(B, C, grid * f, grid * f)`` with
``f = S / grid / 2 ** len(channels)``; memory ``(positions, memory_size, C)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anatomix.anomaly.models.squid import SQUID
from anatomix.errors import UsageError


class SimSID(SQUID):
    """SQUID with a learned per-position memory matrix and shuffled-patch training.

    Args:
        image_size: side S; ``S / grid`` must be divisible by ``2 ** len(channels)``.
        grid: patches per side.
        channels: per-patch encoder widths (one stride-2 stage each).
        memory_size: learned entries per feature-map position.
        shuffle_fraction: fraction of each training film's patches that trade places (0 = none).
        distill_weight: weight of the student-teacher feature loss.
    """

    method = "simsid"

    def __init__(self, image_size: int = 128, grid: int = 8, channels: Sequence[int] = (32, 64, 128),
                 memory_size: int = 32, shuffle_fraction: float = 0.25, distill_weight: float = 1.0,
                 uncertainty: bool = False) -> None:
        if not 0.0 <= shuffle_fraction <= 1.0:
            raise UsageError(f"shuffle_fraction must be in [0, 1], got {shuffle_fraction}")
        super().__init__(image_size, grid, channels, queue_size=memory_size, distill_weight=distill_weight,
                         uncertainty=uncertainty)
        self.config.pop("queue_size")
        self.config.update(memory_size=int(memory_size), shuffle_fraction=float(shuffle_fraction))
        self.shuffle_fraction = float(shuffle_fraction)

    def _init_memory(self, positions: int, size: int, c: int) -> None:
        """The learned memory matrix ``(positions, size, C)``."""
        self.memory = nn.Parameter(torch.randn(positions, size, c) * 0.02)

    def memory_bank(self) -> torch.Tensor:
        return self.memory

    def shuffle_patches(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of ``x`` ``(B, 1, S, S)`` in which ``shuffle_fraction`` of each film's
        ``grid x grid`` patches are permuted among themselves (torch's global generator)."""
        g, p = self.grid, self.psize
        n = int(round(self.shuffle_fraction * g * g))
        if n < 2:
            return x
        b = x.shape[0]
        patches = x.reshape(b, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(b, g * g, p, p).clone()
        for i in range(b):
            idx = torch.randperm(g * g, device=x.device)[:n]
            patches[i, idx] = patches[i, idx[torch.randperm(n, device=x.device)]]
        return patches.reshape(b, g, g, p, p).permute(0, 1, 3, 2, 4).reshape(b, 1, g * p, g * p)

    def training_loss(self, x):
        t = self.encode(x)
        s = self.student(self.encode(self.shuffle_patches(x)))
        rec_t, rec_s = self.decode(t), self.decode(s)
        pix = (x - rec_s) ** 2
        feat = ((s - t.detach()) ** 2).mean(1)
        loss = ((x - rec_t) ** 2).mean() + pix.mean() + self.distill_weight * feat.mean()
        with torch.no_grad():
            self.pix_scale.mul_(0.99).add_(0.01 * pix.mean())
            self.feat_scale.mul_(0.99).add_(0.01 * feat.mean())
        return loss, {"mse": float(pix.detach().mean()), "feat": float(feat.detach().mean())}
