"""``mae``: ViT masked autoencoder with memory-augmented self-attention (MemMC-MAE style).

After Tian et al., "Unsupervised anomaly detection in medical images with a memory-augmented
multi-level cross-attention masked autoencoder" (MLMI 2023):

- the encoder sees only the visible patches (mask ratio 0.75 in training); its self-attention
  attends to the tokens *and* to ``mem_slots`` learned key/value slots (memory of normal
  patterns), which gives it somewhere to look other than the anomaly itself;
- the decoder (pre-norm blocks: self-attention, cross-attention, MONAI's ``MLPBlock``; MONAI's
  own ``TransformerBlock`` needs ``einops``, which anatomix does not depend on) rebuilds all
  patches; its block ``i`` cross-attends to the output of encoder level
  ``L - 1 - i`` (multi-level cross-attention);
- at scoring time the patches are split into ``1 / (1 - mask_ratio)`` fixed parts; pass ``i``
  shows only part ``i`` (the training mask ratio) and predicts the others, so every patch is
  predicted ``n - 1`` times from patches that exclude it; the residual of the averaged
  prediction is the map. The masks come from a fixed seed: the same image always gets the
  same score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anatomix.anomaly.models.base import AnomalyModel
from anatomix.errors import UsageError


class MemorySelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values are extended by learned memory slots.

    .. math:: \\mathrm{Attn}(Q, [K; M_k], [V; M_v])

    Shapes:
        input ``(B, N, D)`` -> output ``(B, N, D)``.
    """

    def __init__(self, dim: int, heads: int, mem_slots: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mem_k = nn.Parameter(torch.randn(mem_slots, dim) * 0.02)
        self.mem_v = nn.Parameter(torch.randn(mem_slots, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        k = torch.cat([k, self.mem_k.expand(b, -1, -1)], 1)
        v = torch.cat([v, self.mem_v.expand(b, -1, -1)], 1)

        def split(t):
            return t.view(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class MemoryBlock(nn.Module):
    """Pre-norm transformer block with :class:`MemorySelfAttention` and MONAI's MLP."""

    def __init__(self, dim: int, heads: int, mem_slots: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        from monai.networks.blocks import MLPBlock

        self.norm1 = nn.LayerNorm(dim)
        self.attn = MemorySelfAttention(dim, heads, mem_slots)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), 0.0)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head attention of queries ``(B, N, D)`` over a context ``(B, M, D)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, context):
        b, n, d = x.shape
        k, v = self.kv(context).chunk(2, dim=-1)

        def split(t):
            return t.view(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(x)), split(k), split(v))
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class CrossBlock(nn.Module):
    """Pre-norm decoder block: self-attention, cross-attention to an encoder level, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        from monai.networks.blocks import MLPBlock

        self.norm1, self.self_attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.norm_ctx, self.cross_attn = nn.LayerNorm(dim), nn.LayerNorm(dim), Attention(dim, heads)
        self.norm3, self.mlp = nn.LayerNorm(dim), MLPBlock(dim, int(dim * mlp_ratio), 0.0)

    def forward(self, x, context):
        h = self.norm1(x)
        x = x + self.self_attn(h, h)
        x = x + self.cross_attn(self.norm2(x), self.norm_ctx(context))
        return x + self.mlp(self.norm3(x))


def _sincos_2d(g: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding ``(g*g, dim)``."""
    yy, xx = torch.meshgrid(torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32), indexing="ij")
    q = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(q, dtype=torch.float32) / q))
    parts = []
    for c in (yy.flatten(), xx.flatten()):
        a = c[:, None] * omega[None]
        parts += [a.sin(), a.cos()]
    return torch.cat(parts, 1)


class MemMCMAE(AnomalyModel):
    """Masked autoencoder with memory self-attention and multi-level cross-attention decoding.

    Args:
        image_size: side S (divisible by ``patch``).
        patch: patch side P; N = (S / P)^2 tokens.
        dim: token width D (encoder and decoder).
        depth: encoder blocks; the decoder has ``dec_depth`` blocks.
        heads: attention heads.
        mem_slots: learned memory key/value slots per encoder block.
        mask_ratio: share of patches hidden in training; ``1 / (1 - mask_ratio)`` should be an
            integer (number of visible parts at scoring).

    Shapes:
        input ``(B, 1, S, S)``; :meth:`reconstruct` ``(B, 1, S, S)``.
    """

    method = "mae"

    def __init__(self, image_size: int = 64, patch: int = 8, dim: int = 128, depth: int = 4,
                 dec_depth: int = 2, heads: int = 4, mem_slots: int = 16, mask_ratio: float = 0.75) -> None:
        super().__init__(image_size)
        self.config.update(patch=int(patch), dim=int(dim), depth=int(depth), dec_depth=int(dec_depth),
                           heads=int(heads), mem_slots=int(mem_slots), mask_ratio=float(mask_ratio))
        if image_size % patch:
            raise UsageError(f"image_size {image_size} is not divisible by patch {patch}")
        self.patch, self.grid = patch, image_size // patch
        self.n = self.grid ** 2
        self.mask_ratio = mask_ratio
        self.n_masks = round(1.0 / (1.0 - mask_ratio))
        self.embed = nn.Linear(patch * patch, dim)
        self.register_buffer("pos", _sincos_2d(self.grid, dim)[None], persistent=False)
        self.enc = nn.ModuleList([MemoryBlock(dim, heads, mem_slots) for _ in range(depth)])
        self.enc_norm = nn.LayerNorm(dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.dec = nn.ModuleList([CrossBlock(dim, heads) for _ in range(dec_depth)])
        self.dec_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, patch * patch)

    # patches ------------------------------------------------------------------------------
    def patchify(self, x):
        b, p, g = x.shape[0], self.patch, self.grid
        return x.view(b, 1, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p)

    def unpatchify(self, t):
        b, p, g = t.shape[0], self.patch, self.grid
        return t.view(b, g, g, p, p).permute(0, 1, 3, 2, 4).reshape(b, 1, g * p, g * p)

    # model --------------------------------------------------------------------------------
    def _predict(self, x, keep_idx):
        """Predict all patches from the visible ones ``keep_idx`` ``(B, K)``; returns ``(B, N, P*P)``."""
        tokens = self.embed(self.patchify(x)) + self.pos
        d = tokens.shape[-1]
        h = torch.gather(tokens, 1, keep_idx[..., None].expand(-1, -1, d))
        levels = []
        for blk in self.enc:
            h = blk(h)
            levels.append(h)
        levels[-1] = self.enc_norm(h)
        full = self.mask_token.expand(x.shape[0], self.n, d).clone()
        full = full.scatter(1, keep_idx[..., None].expand(-1, -1, d), levels[-1])
        z = full + self.pos
        for i, blk in enumerate(self.dec):
            z = blk(z, levels[len(levels) - 1 - (i % len(levels))])
        return torch.sigmoid(self.head(self.dec_norm(z)))

    def training_loss(self, x):
        b = x.shape[0]
        n_keep = self.n - round(self.n * self.mask_ratio)
        order = torch.rand(b, self.n, device=x.device).argsort(1)
        keep = order[:, :n_keep]
        pred = self._predict(x, keep)
        target = self.patchify(x)
        masked = torch.ones(b, self.n, device=x.device)
        masked.scatter_(1, keep, 0.0)
        err = ((pred - target) ** 2).mean(-1)
        loss = (err * masked).sum() / masked.sum()
        return loss, {"mse": float(loss.detach())}

    def scoring_masks(self) -> torch.Tensor:
        """``(n_masks, N)`` bool *visible* sets: a fixed-seed partition of the patches.

        Pass ``i`` shows only part ``i`` (``1 - mask_ratio`` of the patches, as in training)
        and predicts the rest, so every patch is predicted ``n_masks - 1`` times.
        """
        g = torch.Generator().manual_seed(20240601)
        perm = torch.randperm(self.n, generator=g)
        visible = torch.zeros(self.n_masks, self.n, dtype=torch.bool)
        for i, chunk in enumerate(perm.chunk(self.n_masks)):
            visible[i, chunk] = True
        return visible

    def reconstruct(self, x):
        """Every patch predicted from fixed visible sets that exclude it, averaged."""
        b = x.shape[0]
        out = torch.zeros(b, self.n, self.patch ** 2, device=x.device)
        count = torch.zeros(self.n, 1, device=x.device)
        for vis in self.scoring_masks().to(x.device):
            keep = torch.nonzero(vis).flatten()[None].expand(b, -1)
            pred = self._predict(x, keep)
            out[:, ~vis] += pred[:, ~vis]
            count[~vis] += 1
        return self.unpatchify(out / count.clamp_min(1))
