"""``squid``: SQUID-style in-painting of features from space-aware memory queues.

After Xiang et al., "SQUID: Deep Feature In-Painting for Unsupervised Anomaly Detection"
(CVPR 2023), simplified to what trains in minutes on a CPU:

- the image is cut into a ``grid x grid`` array of patches and every patch is encoded *on its
  own* (shared conv encoder), so a patch's feature knows nothing of its neighbours;
- **space-aware memory queues**: for every grid position a FIFO queue of ``queue_size`` recent
  normal features (a buffer, refreshed with every training batch, not learned);
- **in-painting**: each patch feature is predicted from its eight neighbours only (a 3x3
  convolution whose centre tap is zero) and fused with the feature read from its position's
  queue (soft attention over the queue entries);
- a **teacher** path decodes the real features and a **student** path decodes the in-painted
  ones with the same decoder; the student features are distilled towards the teacher's.

SQUID scores with a GAN discriminator; here the native map is the student's pixel error plus
the feature-level in-painting error (upsampled), each divided by its running mean on the
training normals so the two terms weigh alike. An abnormal patch cannot be in-painted from
normal neighbours and normal memory, so both terms rise there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anatomix.anomaly.models.base import AnomalyModel, conv_decoder, conv_encoder
from anatomix.errors import UsageError


class MaskedNeighbourConv(nn.Conv2d):
    """3x3 convolution that ignores the centre pixel (predicts a location from its neighbours)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=1, padding_mode="replicate")
        mask = torch.ones(1, 1, 3, 3)
        mask[..., 1, 1] = 0
        self.register_buffer("tap_mask", mask, persistent=False)

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.tap_mask, self.bias)


class SQUID(AnomalyModel):
    """Patch encoder + space-aware memory queues + neighbour in-painting + shared decoder.

    Args:
        image_size: side S; ``S / grid`` (the patch side) must be divisible by ``2 ** len(channels)``.
        grid: patches per side.
        channels: per-patch encoder widths (one stride-2 stage each).
        queue_size: entries per position queue.
        distill_weight: weight of the student-teacher feature loss.

    Shapes:
        input ``(B, 1, S, S)``; features ``(B, C, grid * f, grid * f)`` with
        ``f = S / grid / 2 ** len(channels)``.
    """

    method = "squid"

    def __init__(self, image_size: int = 64, grid: int = 4, channels: Sequence[int] = (32, 64, 128),
                 queue_size: int = 64, distill_weight: float = 1.0, uncertainty: bool = False) -> None:
        super().__init__(image_size)
        channels = [int(c) for c in channels]
        self.config.update(grid=int(grid), channels=channels, queue_size=int(queue_size),
                           distill_weight=float(distill_weight), uncertainty=bool(uncertainty))
        self.grid, self.psize = grid, image_size // grid
        down = 2 ** len(channels)
        if self.psize * grid != image_size or self.psize % down:
            raise UsageError(f"image_size {image_size} must split into {grid}x{grid} patches divisible by {down}")
        self.f = self.psize // down
        c = channels[-1]
        self.c = c
        self.distill_weight = float(distill_weight)
        self.encoder = conv_encoder(channels)
        self.inpaint = nn.Sequential(MaskedNeighbourConv(c, c), nn.LeakyReLU(0.2, inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(2 * c, c, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(c, c, 1))
        self.decoder = conv_decoder(channels, 1)
        self._init_memory(grid * grid * self.f * self.f, queue_size, c)
        # running means of the two map terms on training normals (for the native map)
        self.register_buffer("pix_scale", torch.ones(()))
        self.register_buffer("feat_scale", torch.ones(()))

    def _init_memory(self, positions: int, size: int, c: int) -> None:
        """A FIFO queue of ``size`` features per feature-map position (a buffer, not learned)."""
        self.register_buffer("queue", torch.randn(positions, size, c) * 0.01)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def memory_bank(self) -> torch.Tensor:
        """The entries every position attends to, ``(positions, size, C)``."""
        return self.queue.clone() if self.training else self.queue  # enqueue later is in place

    # patches <-> feature map -------------------------------------------------------------
    def encode(self, x):
        """Encode every patch alone; returns the feature map ``(B, C, grid*f, grid*f)``."""
        b, g, p = x.shape[0], self.grid, self.psize
        patches = x.view(b, 1, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b * g * g, 1, p, p)
        feat = self.encoder(patches)  # (b*g*g, C, f, f)
        f = self.f
        return feat.view(b, g, g, self.c, f, f).permute(0, 3, 1, 4, 2, 5).reshape(b, self.c, g * f, g * f)

    def decode(self, feat):
        """Decode each patch's feature alone back to pixels ``(B, 1, S, S)``."""
        b, g, f, p = feat.shape[0], self.grid, self.f, self.psize
        per = feat.view(b, self.c, g, f, g, f).permute(0, 2, 4, 1, 3, 5).reshape(b * g * g, self.c, f, f)
        out = torch.sigmoid(self.decoder(per))
        return out.view(b, g, g, 1, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, 1, g * p, g * p)

    def read_memory(self, feat):
        """Soft attention of every position's feature over its own memory entries."""
        b, c, h, w = feat.shape
        bank = self.memory_bank()
        q = feat.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, HW, C)
        att = torch.einsum("bnc,nqc->bnq", F.normalize(q, dim=-1), F.normalize(bank, dim=-1))
        att = F.softmax(att / 0.1, dim=-1)
        mem = torch.einsum("bnq,nqc->bnc", att, bank)
        return mem.view(b, h, w, c).permute(0, 3, 1, 2)

    def student(self, teacher_feat):
        """In-painted features: neighbours (centre hidden) fused with the memory read-out."""
        return self.fuse(torch.cat([self.inpaint(teacher_feat), self.read_memory(teacher_feat)], 1))

    @torch.no_grad()
    def _enqueue(self, feat):
        b, c, h, w = feat.shape
        items = feat.detach().permute(2, 3, 0, 1).reshape(h * w, b, c)  # per position, B new entries
        q = self.queue.shape[1]
        n = min(b, q)
        idx = (self.queue_ptr + torch.arange(n, device=feat.device)) % q
        self.queue[:, idx] = items[:, :n]
        self.queue_ptr.copy_((self.queue_ptr + n) % q)

    def training_loss(self, x):
        t = self.encode(x)
        s = self.student(t)
        rec_t, rec_s = self.decode(t), self.decode(s)
        pix = ((x - rec_s) ** 2)
        feat = ((s - t.detach()) ** 2).mean(1)
        loss = ((x - rec_t) ** 2).mean() + pix.mean() + self.distill_weight * feat.mean()
        self._enqueue(t)
        with torch.no_grad():
            self.pix_scale.mul_(0.99).add_(0.01 * pix.mean())
            self.feat_scale.mul_(0.99).add_(0.01 * feat.mean())
        return loss, {"mse": float(pix.detach().mean()), "feat": float(feat.detach().mean())}

    def reconstruct(self, x):
        return self.decode(self.student(self.encode(x)))

    def feature_map(self, x):
        """Feature-level in-painting error, upsampled to ``(B, 1, S, S)``."""
        t = self.encode(x)
        s = self.student(t)
        err = ((s - t) ** 2).mean(1, keepdim=True)
        return F.interpolate(err, size=x.shape[-2:], mode="bilinear", align_corners=False), self.decode(s)

    def native_map(self, x):
        feat, rec = self.feature_map(x)
        return (x - rec) ** 2 / self.pix_scale.clamp_min(1e-8) + feat / self.feat_scale.clamp_min(1e-8)
