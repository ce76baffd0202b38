"""HybridGNet: a convolutional VAE encoder and a Chebyshev graph decoder with image-to-graph skips.

After Gaggion et al., "Improving anatomical plausibility in medical image segmentation via hybrid
graph neural networks", IEEE TMI 2022, and its "HybridGNet 2-IGSC" variant (two image-to-graph
skip connections). Written from the paper's description, sized for CPU training.

The model maps a square grayscale image to the template's landmark nodes:

1. **Encoder.** A one-conv stem and residual conv stages, each halving the resolution
   (GroupNorm, so every image is processed independently of the rest of its batch), until the
   map is at most 8 x 8; then two linear heads give the posterior
   :math:`q(z|x) = \\mathcal{N}(\\mu, \\mathrm{diag}(\\sigma^2))` with
   :math:`\\log \\sigma^2` = ``logvar``.
2. **Latent.** Training: :math:`z = \\mu + \\epsilon \\odot \\sigma`, :math:`\\epsilon \\sim
   \\mathcal{N}(0, I)` (reparameterisation). Evaluation: :math:`z = \\mu`.
3. **Decoder.** A linear map sends ``z`` to features on the coarsest level of the graph pyramid
   (:mod:`anatomix.graphs.pooling`); at each level, coarse to fine, the features are unpooled
   (:math:`X_l = U_l X_{l+1}`) and pass two blocks ``ChebConv -> LayerNorm (per node) -> ReLU``,
   where :math:`\\mathrm{ChebConv}(X) = \\sum_{k<K} T_k(\\hat L) X \\Theta_k` with the scaled ring
   Laplacian :math:`\\hat L` (torch_geometric's ``ChebConv``, its propagation a product with the
   dense :math:`\\hat L` of the fixed graph: :class:`FixedGraphChebConv`). A last ChebConv gives
   the (x, y) position of every node, added to a learned per-node offset (the mean shape; the
   ChebConv starts near zero, see :class:`PositionHead`).
4. **Image-to-graph skips (IGSC).** At the ``n_skips`` finest levels, before the blocks, a ChebConv
   head predicts intermediate positions :math:`p = \\mathrm{sigmoid}(\\mathrm{ChebConv}(X) + b)`; the
   encoder map of matching depth is sampled there (bilinear ``grid_sample``) and
   ``[X, features(p), p]`` goes on. Finer graph levels sample shallower (finer) encoder maps.

Positions are (x, y) normalised to [0, 1] of the model frame: pixel column ``c`` spans
``[c / S, (c + 1) / S)``; multiply by ``S`` for model-frame pixels.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anatomix.anatomy import TEMPLATES
from anatomix.errors import UsageError
from anatomix.graphs.pooling import GraphPyramid, pyramid
from anatomix.runtime import quiet_imports

quiet_imports()
from torch_geometric.nn import ChebConv  # noqa: E402 (imported after quiet_imports)

BOTTOM_MAX = 8
"""The encoder halves the image until its side is at most this."""
HEAD_INIT_SCALE = 1e-2
"""Position heads start at this fraction of the default ChebConv initialisation."""


# -- configuration -----------------------------------------------------------------------------
@dataclass
class GraphConfig:
    """Everything needed to rebuild a :class:`HybridGNet` (saved next to its ``state_dict``).

    Attributes:
        template: landmark template name, ``"lungs_heart"`` (120 nodes) or ``"full"`` (166).
        image_size: side ``S`` of the square model frame; halved by the encoder until it is at most
            8, so it must be ``b * 2**k`` with ``b <= 8`` (e.g. 64, 256, 384, 512, 1024).
        latent_dim: size of the VAE latent ``z``.
        encoder_channels: widths of the encoder's stride-2 stages (the first is the stem), shallow
            to deep; deeper encoders (larger images) repeat the last width, shallower ones use
            the first entries.
        graph_channels: node feature widths of the decoder, one per graph level, coarse to fine;
            its length is the number of graph levels.
        cheb_k: order ``K`` of the Chebyshev filters.
        n_skips: number of image-to-graph skip connections, at the finest graph levels.
        crop_borders: preprocessing crops the image to its exposed field first
            (:func:`anatomix.data.preprocess.exposed_field`); saved so inference matches training.
    """

    template: str = "lungs_heart"
    image_size: int = 256
    latent_dim: int = 64
    encoder_channels: tuple[int, ...] = (16, 32, 64, 128, 128)
    graph_channels: tuple[int, ...] = (128, 128, 64, 64)
    cheb_k: int = 6
    n_skips: int = 2
    crop_borders: bool = False

    def __post_init__(self) -> None:
        self.encoder_channels = tuple(int(c) for c in self.encoder_channels)
        self.graph_channels = tuple(int(c) for c in self.graph_channels)
        TEMPLATES.get(self.template)  # UsageError naming the templates when unknown
        if not self.encoder_channels or not self.graph_channels:
            raise UsageError("encoder_channels and graph_channels must not be empty")
        if self.cheb_k < 1 or self.latent_dim < 1:
            raise UsageError("cheb_k and latent_dim must be >= 1")
        if not 0 <= self.n_skips <= min(self.n_levels, self.n_stages):
            raise UsageError(f"n_skips={self.n_skips} must lie in [0, min(graph levels "
                             f"{self.n_levels}, encoder stages {self.n_stages})]")
        pyramid(self.template, self.n_levels)  # raises if the rings cannot be halved that often

    @property
    def n_stages(self) -> int:
        """Number of stride-2 encoder stages for ``image_size``."""
        n, s = 0, self.image_size
        while s > BOTTOM_MAX:
            if s % 2:
                raise UsageError(f"image_size {self.image_size} must be b * 2**k with b <= {BOTTOM_MAX}")
            s, n = s // 2, n + 1
        if n == 0:
            raise UsageError(f"image_size {self.image_size} is too small (need > {BOTTOM_MAX})")
        return n

    @property
    def bottom_size(self) -> int:
        """Side of the deepest encoder map."""
        return self.image_size >> self.n_stages

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Width of every encoder stage (``encoder_channels`` cut or extended with its last)."""
        c = self.encoder_channels
        return tuple(c[min(i, len(c) - 1)] for i in range(self.n_stages))

    @property
    def n_levels(self) -> int:
        """Number of graph levels (finest = the template)."""
        return len(self.graph_channels)

    @property
    def skip_stages(self) -> tuple[int, ...]:
        """Encoder stage sampled by the skip at graph level ``l``, for ``l = 0 .. n_skips - 1``."""
        return tuple(self.n_stages - self.n_skips + level for level in range(self.n_skips))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GraphConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            UsageError: on keys that are not fields of the config.
        """
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UsageError(f"unknown GraphConfig keys {sorted(unknown)}; known: {sorted(names)}")
        return cls(**dict(d))


# -- encoder -----------------------------------------------------------------------------------
def _groups(channels: int) -> int:
    """Largest of 8, 4, 2, 1 that divides ``channels``."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class ResidualDown(nn.Module):
    """Residual block that halves the resolution.

    ``y = ReLU(GN(conv3x3(ReLU(GN(conv3x3_s2(x))))) + GN(conv1x1_s2(x)))``

    Shapes:
        x: (B, C_in, H, W) -> (B, C_out, H / 2, W / 2)
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.skip_norm = nn.GroupNorm(_groups(out_channels), out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + self.skip_norm(self.skip(x)))


class Stem(nn.Module):
    """First halving: ``ReLU(GN(conv5x5_s2(x)))``.

    A single conv: at full resolution a residual block of a few channels costs about as much
    CPU time as all the later stages together.

    Shapes:
        x: (B, 1, H, W) -> (B, C, H / 2, W / 2)
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, out_channels, 5, stride=2, padding=2, bias=False)
        self.norm = nn.GroupNorm(_groups(out_channels), out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


class Encoder(nn.Module):
    """A stem and stride-2 residual stages, then linear heads for ``mu`` and ``logvar``.

    Shapes:
        x: (B, 1, S, S) -> mu, logvar: (B, latent_dim); maps: one (B, C_i, S / 2**(i+1), ...)
        per stage i.
    """

    def __init__(self, cfg: GraphConfig) -> None:
        super().__init__()
        widths = cfg.stage_channels
        self.stages = nn.ModuleList([Stem(widths[0]), *(ResidualDown(a, b) for a, b in pairwise(widths))])
        flat = widths[-1] * cfg.bottom_size ** 2
        self.fc_mu = nn.Linear(flat, cfg.latent_dim)
        self.fc_logvar = nn.Linear(flat, cfg.latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        flat = x.flatten(1)
        return self.fc_mu(flat), self.fc_logvar(flat), maps


# -- decoder -----------------------------------------------------------------------------------
def scaled_laplacian(edge_index: Tensor, n_nodes: int) -> Tensor:
    """The scaled Laplacian ``L_hat`` that torch_geometric's ``ChebConv`` propagates with, dense.

    Built by ``ChebConv``'s own normalisation (symmetric, ``lambda_max`` its default) and
    propagation applied to the identity matrix, so ``L_hat @ x`` is what the layer's sparse
    ``propagate`` computes (up to summation order).

    Shapes:
        edge_index: (2, E) -> (N, N)
    """
    conv = ChebConv(1, 1, 2)
    eye = torch.eye(n_nodes, dtype=torch.float32, device=edge_index.device)
    index, norm = conv.__norm__(edge_index, n_nodes, None, conv.normalization, None, dtype=eye.dtype)
    with torch.no_grad():
        return conv.propagate(index, x=eye, norm=norm)


class FixedGraphChebConv(ChebConv):
    """torch_geometric's ``ChebConv`` (same parameters, initialisation and state dict) on one
    fixed graph given as its dense scaled Laplacian (:func:`scaled_laplacian`):
    ``sum_k T_k(L_hat) x Theta_k + b`` with matrix products instead of sparse message passing.

    Equal to ``ChebConv(x, edge_index)`` to float rounding; on the template's small graphs
    (at most a few hundred nodes) the model infers 1.3-1.5x and trains 1.2x faster on a CPU
    (``bench/graph_speed.py --sparse-baseline``), and exporters (ONNX) see only matrix products.

    Shapes:
        x: (B, N, C_in), lap: (N, N) -> (B, N, C_out)
    """

    def dense_forward(self, x: Tensor, lap: Tensor) -> Tensor:
        """The layer's forward (see the class docstring)."""
        tx0 = x
        out = self.lins[0](tx0)
        if len(self.lins) > 1:
            tx1 = torch.matmul(lap, x)
            out = out + self.lins[1](tx1)
            for lin in self.lins[2:]:
                tx2 = 2.0 * torch.matmul(lap, tx1) - tx0
                out = out + lin(tx2)
                tx0, tx1 = tx1, tx2
        return out if self.bias is None else out + self.bias

    forward = dense_forward  # type: ignore[assignment]

    def sparse_forward(self, x: Tensor, lap: Tensor) -> Tensor:
        """torch_geometric's own ``ChebConv.forward`` on the graph of ``lap`` (sparse message
        passing, the normalisation recomputed at each call, as the layer ran before): the
        reference the dense product equals, and the baseline benches time."""
        if id(lap) not in _EDGES:  # L_hat[i, j] != 0 exactly for the edges j -> i (zero diagonal)
            _EDGES[id(lap)] = (lap != 0).nonzero().flip(1).t().contiguous()
            weakref.finalize(lap, _EDGES.pop, id(lap), None)
        return ChebConv.forward(self, x, _EDGES[id(lap)])


_EDGES: dict[int, Tensor] = {}
"""edge_index of each live scaled Laplacian :meth:`FixedGraphChebConv.sparse_forward` has seen."""


@contextmanager
def sparse_propagation():
    """Within: every :class:`FixedGraphChebConv` runs :meth:`~FixedGraphChebConv.sparse_forward`
    (benches time the dense layers against it in one process)."""
    saved, FixedGraphChebConv.forward = FixedGraphChebConv.forward, FixedGraphChebConv.sparse_forward
    try:
        yield
    finally:
        FixedGraphChebConv.forward = saved


class GraphBlock(nn.Module):
    """``ReLU(LayerNorm(ChebConv(x)))``: LayerNorm over the features of each node.

    Shapes:
        x: (B, N, C_in), lap: (N, N) scaled Laplacian -> (B, N, C_out)
    """

    def __init__(self, in_channels: int, out_channels: int, k: int) -> None:
        super().__init__()
        self.conv = FixedGraphChebConv(in_channels, out_channels, k)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor, lap: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x, lap)))


def sample_nodes(feature_map: Tensor, pos: Tensor) -> Tensor:
    """Bilinear features of a map at normalised node positions (border padding outside).

    Shapes:
        feature_map: (B, C, H, W), pos: (B, N, 2) (x, y) in [0, 1] -> (B, N, C)
    """
    grid = (pos * 2.0 - 1.0).unsqueeze(2)  # (B, N, 1, 2), align_corners=False convention
    out = F.grid_sample(feature_map, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.squeeze(-1).transpose(1, 2)


class PositionHead(nn.Module):
    """Node positions from node features, around a learned per-node offset.

    ``p = ChebConv(x) + b`` with ``b`` an (N, 2) parameter. The ChebConv weights start at
    ``HEAD_INIT_SCALE`` times their default initialisation, so training starts from
    ``p ~= b = init`` and ``b`` becomes the mean shape, leaving the ChebConv to model the
    image-dependent part (much faster to train than a shared bias); the small random part keeps
    an untrained model's output dependent on the image and on ``z``.

    Shapes:
        x: (B, N, C), lap: (N, N) scaled Laplacian -> (B, N, 2)
    """

    def __init__(self, in_channels: int, n_nodes: int, k: int, init: float) -> None:
        super().__init__()
        self.init = init
        self.conv = FixedGraphChebConv(in_channels, 2, k, bias=False)
        self.offset = nn.Parameter(torch.empty(n_nodes, 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        with torch.no_grad():
            for lin in self.conv.lins:
                lin.weight.mul_(HEAD_INIT_SCALE)
        nn.init.constant_(self.offset, self.init)

    def forward(self, x: Tensor, lap: Tensor) -> Tensor:
        return self.conv(x, lap) + self.offset

    def extra_repr(self) -> str:
        return f"n_nodes={self.offset.shape[0]}, init={self.init}"


class ImageSkip(nn.Module):
    """Image-to-graph skip: predict positions, sample image features there, concatenate.

    ``p = sigmoid(PositionHead(x)); x' = [x, sample(F, p), p]``

    Shapes:
        x: (B, N, C), lap: (N, N) scaled Laplacian, feature_map: (B, C_f, H, W)
        -> x': (B, N, C + C_f + 2), p: (B, N, 2)
    """

    def __init__(self, in_channels: int, n_nodes: int, k: int) -> None:
        super().__init__()
        self.pos = PositionHead(in_channels, n_nodes, k, init=0.0)

    def forward(self, x: Tensor, lap: Tensor, feature_map: Tensor) -> tuple[Tensor, Tensor]:
        pos = torch.sigmoid(self.pos(x, lap))
        return torch.cat([x, sample_nodes(feature_map, pos), pos], dim=-1), pos


class GraphDecoder(nn.Module):
    """Latent -> coarsest graph -> (unpool, [skip], 2 blocks) per level -> ChebConv -> positions.

    Shapes:
        z: (B, latent_dim), skip_maps: one (B, C_f, H, W) per skip level (finest first)
        -> positions (B, N_0, 2), intermediate positions: one (B, N_l, 2) per skip level,
        coarse to fine
    """

    def __init__(self, cfg: GraphConfig, pyr: GraphPyramid) -> None:
        super().__init__()
        top = cfg.n_levels - 1
        self.top_shape = (pyr.n_nodes[top], cfg.graph_channels[0])
        self.fc = nn.Linear(cfg.latent_dim, pyr.n_nodes[top] * cfg.graph_channels[0])
        for level in range(cfg.n_levels):
            self.register_buffer(f"lap_{level}", scaled_laplacian(pyr.edge_index(level), pyr.n_nodes[level]),
                                 persistent=False)
        for level in range(top):
            self.register_buffer(f"up_{level}", torch.from_numpy(pyr.up[level]), persistent=False)
        skip_width = {lv: cfg.stage_channels[s] for lv, s in enumerate(cfg.skip_stages)}
        self.skips = nn.ModuleDict()
        self.blocks = nn.ModuleList()
        width = cfg.graph_channels[0]
        for level, out in zip(range(top, -1, -1), cfg.graph_channels, strict=True):
            if level in skip_width:
                self.skips[str(level)] = ImageSkip(width, pyr.n_nodes[level], cfg.cheb_k)
                width += skip_width[level] + 2
            self.blocks.append(nn.ModuleList([GraphBlock(width, out, cfg.cheb_k),
                                              GraphBlock(out, out, cfg.cheb_k)]))
            width = out
        self.head = PositionHead(width, pyr.n_nodes[0], cfg.cheb_k, init=0.5)

    def forward(self, z: Tensor, skip_maps: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        x = F.relu(self.fc(z)).view(z.shape[0], *self.top_shape)
        top = len(self.blocks) - 1
        intermediate = []
        for level, blocks in zip(range(top, -1, -1), self.blocks, strict=True):
            lap = getattr(self, f"lap_{level}")
            if level < top:
                x = torch.matmul(getattr(self, f"up_{level}"), x)
            if str(level) in self.skips:
                x, pos = self.skips[str(level)](x, lap, skip_maps[level])
                intermediate.append(pos)
            for block in blocks:
                x = block(x, lap)
        return self.head(x, self.lap_0), intermediate


# -- model -------------------------------------------------------------------------------------
def per_image_noise(mu: Tensor, n: int, seed: int) -> Tensor:
    """``n`` standard normal draws per image, each image's from its own generator seeded with
    ``seed`` (so an image's draws do not depend on its batch).

    Shapes:
        mu: (B, D) -> (n, B, D)
    """
    return torch.stack([torch.randn((n, mu.shape[1]), generator=torch.Generator(device=mu.device).manual_seed(seed),
                                    device=mu.device, dtype=mu.dtype) for _ in range(mu.shape[0])], dim=1)


@dataclass
class GraphOutput:
    """What :class:`HybridGNet` returns.

    Attributes:
        landmarks: (B, N, 2) final node positions, (x, y) normalised to [0, 1] of the model frame
            (unbounded: a node may lie slightly outside the frame).
        intermediate: IGSC position predictions, coarse to fine, each (B, N_l, 2) in [0, 1].
        levels: graph level of each ``intermediate`` entry (0 = the full template).
        mu: (B, latent_dim) posterior mean.
        logvar: (B, latent_dim) posterior log-variance.
        template: name of the template the nodes follow.
    """

    landmarks: Tensor
    intermediate: list[Tensor]
    levels: tuple[int, ...]
    mu: Tensor
    logvar: Tensor
    template: str


class HybridGNet(nn.Module):
    """Image -> landmark graph. See the module docstring for the architecture and the math.

    Args:
        cfg: the configuration; defaults to :class:`GraphConfig` ().

    Shapes:
        x: (B, 1, S, S) float image normalised by the caller, ``S = cfg.image_size``
        -> :class:`GraphOutput` with landmarks (B, N, 2), N = 120 (lungs_heart) or 166 (full)

    Example:
        >>> model = HybridGNet(GraphConfig(image_size=64)).eval()
        >>> model(torch.rand(2, 1, 64, 64)).landmarks.shape
        torch.Size([2, 120, 2])
    """

    def __init__(self, cfg: GraphConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or GraphConfig()
        self.pyramid = pyramid(self.cfg.template, self.cfg.n_levels)
        self.encoder = Encoder(self.cfg)
        self.decoder = GraphDecoder(self.cfg, self.pyramid)

    @property
    def n_nodes(self) -> int:
        return self.pyramid.n_nodes[0]

    def reset_parameters(self) -> None:
        """Re-initialise every learnable layer (children before parents)."""
        for m in reversed(list(self.modules())):
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def _check_input(self, x: Tensor) -> None:
        s = self.cfg.image_size
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != (s, s):
            raise ValueError(f"expected images of shape (B, 1, {s}, {s}), got {tuple(x.shape)}")

    def _skip_maps(self, maps: list[Tensor]) -> list[Tensor]:
        return [maps[s] for s in self.cfg.skip_stages]

    def forward(self, x: Tensor) -> GraphOutput:
        """Encode, draw ``z`` (``mu`` in eval mode), decode."""
        self._check_input(x)
        mu, logvar, maps = self.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        landmarks, intermediate = self.decoder(z, self._skip_maps(maps))
        levels = tuple(range(self.cfg.n_skips - 1, -1, -1))
        return GraphOutput(landmarks, intermediate, levels, mu, logvar, self.cfg.template)

    def sample(self, x: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``n`` draws ``z ~ N(mu, sigma^2)`` with the same image features.

        The spread of the samples per node is the model's node-wise uncertainty.

        Shapes:
            x: (B, 1, S, S) -> (n, B, N, 2)
        """
        self._check_input(x)
        mu, logvar, maps = self.encoder(x)
        eps = torch.randn((n, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        return self._decode_draws(mu, logvar, maps, eps)

    def mean_and_samples(self, x: Tensor, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """The evaluation-mode landmarks and ``n`` latent draws per image, the encoder run once.

        The mean is decoded alone (equal to ``forward(x).landmarks``, bit for bit), the draws in
        one batch; each image's draws come from its own generator seeded with ``seed`` (those of
        ``sample(x[i:i+1], n, Generator().manual_seed(seed))``, whatever the batch).

        Shapes:
            x: (B, 1, S, S) -> mean (B, N, 2), draws (n, B, N, 2)
        """
        self._check_input(x)
        mu, logvar, maps = self.encoder(x)
        mean, _ = self.decoder(mu, self._skip_maps(maps))
        return mean, self._decode_draws(mu, logvar, maps, per_image_noise(mu, n, seed))

    def _decode_draws(self, mu: Tensor, logvar: Tensor, maps: list[Tensor], eps: Tensor) -> Tensor:
        """Decode ``z = mu + eps * sigma`` in one batch.

        Shapes:
            mu, logvar: (B, D), eps: (n, B, D) -> (n, B, N, 2)
        """
        n, b, d = eps.shape
        z = (mu + eps * torch.exp(0.5 * logvar)).reshape(n * b, d)
        landmarks, _ = self.decoder(z, [m.repeat(n, 1, 1, 1) for m in self._skip_maps(maps)])
        return landmarks.view(n, b, self.n_nodes, 2)

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"template={c.template!r}, image_size={c.image_size}, latent_dim={c.latent_dim}, "
                f"nodes={self.pyramid.n_nodes}, cheb_k={c.cheb_k}, n_skips={c.n_skips}")
