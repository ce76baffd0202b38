"""Multi-resolution graph pyramid of a landmark template: ring graphs, pooling and unpooling.

Level 0 is the template itself. Level ``l + 1`` keeps every other node of each structure ring of
level ``l`` (nodes ``0, 2, 4, ...`` of the ring, so a ring of ``n`` nodes keeps ``ceil(n / 2)``)
and joins the kept nodes into a ring again. For the 120-node lungs+heart template the node counts
are 120 -> 60 -> 31 -> 17, for the 166-node full template 166 -> 84 -> 43 -> 23.

Between two adjacent levels (``n = N_l`` fine, ``m = N_{l+1}`` coarse nodes):

- the **downsampling** matrix :math:`D_l \\in \\{0, 1\\}^{m \\times n}` selects the kept nodes;
- the **upsampling** matrix :math:`U_l \\in \\mathbb{R}^{n \\times m}` copies a kept node and puts
  a dropped node halfway (linear interpolation along the ring) between its two ring neighbours,
  which are both kept.

So :math:`D_l U_l = I_m`: upsampling then downsampling returns the coarse signal unchanged.
Because downsampling is a selection, level ``l`` is a subset of the template nodes and
:meth:`GraphPyramid.node_index` gives their indices in the full-resolution node order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import torch
from torch import Tensor

from anatomix.anatomy import TEMPLATES, Template
from anatomix.errors import UsageError

MIN_RING = 3
"""Smallest ring that still is a cycle without repeated edges."""


def _ring_down_up(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Selection (m, n) and interpolation (n, m) matrices of one ring of ``n`` nodes."""
    m = (n + 1) // 2
    down = np.zeros((m, n), dtype=np.float32)
    down[np.arange(m), 2 * np.arange(m)] = 1.0
    up = np.zeros((n, m), dtype=np.float32)
    for i in range(n):
        if i % 2 == 0:
            up[i, i // 2] = 1.0
        else:  # neighbours 2k and 2k + 2 (mod n) are kept: coarse k and k + 1 (mod m)
            up[i, i // 2] += 0.5
            up[i, (i // 2 + 1) % m] += 0.5
    return down, up


def _block_diag(blocks: list[np.ndarray]) -> np.ndarray:
    rows, cols = sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols), dtype=np.float32)
    r = c = 0
    for b in blocks:
        out[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


@dataclass(frozen=True, eq=False)
class GraphPyramid:
    """Ring graphs of a template at ``n_levels`` resolutions (level 0 = finest = the template).

    Attributes:
        templates: one :class:`~anatomix.anatomy.Template` per level, with the structures' node
            counts of that level (same structure order, so ring edges come from the template).
        down: ``down[l]`` is the (N_{l+1}, N_l) selection matrix from level l to l + 1.
        up: ``up[l]`` is the (N_l, N_{l+1}) interpolation matrix from level l + 1 to l.
    """

    templates: tuple[Template, ...]
    down: tuple[np.ndarray, ...]
    up: tuple[np.ndarray, ...]

    @classmethod
    def build(cls, template: Template, n_levels: int) -> GraphPyramid:
        """Halve every ring ``n_levels - 1`` times.

        Raises:
            UsageError: if ``n_levels < 1`` or a ring would drop below three nodes.
        """
        if n_levels < 1:
            raise UsageError(f"n_levels must be >= 1, got {n_levels}")
        templates, down, up = [template], [], []
        for _ in range(n_levels - 1):
            fine = templates[-1]
            counts = [(s.count + 1) // 2 for s in fine.structures]
            if min(counts) < MIN_RING:
                raise UsageError(f"{n_levels} levels make a ring of {min(counts)} nodes "
                                 f"(fewer than {MIN_RING}); use fewer graph levels")
            pairs = [_ring_down_up(s.count) for s in fine.structures]
            down.append(_block_diag([d for d, _ in pairs]))
            up.append(_block_diag([u for _, u in pairs]))
            templates.append(Template(tuple(replace(s, count=c) for s, c in zip(fine.structures, counts, strict=True))))
        return cls(tuple(templates), tuple(down), tuple(up))

    @property
    def n_levels(self) -> int:
        return len(self.templates)

    @property
    def n_nodes(self) -> tuple[int, ...]:
        """Node count of every level, finest first."""
        return tuple(t.n_nodes for t in self.templates)

    def edge_index(self, level: int) -> Tensor:
        """(2, 2 * N_level) ring edges of one level (both directions, per structure)."""
        return self.templates[level].edge_index()

    def node_index(self, level: int) -> Tensor:
        """(N_level,) indices of the level's nodes among the full-resolution (level 0) nodes."""
        idx = np.arange(self.n_nodes[0])
        for d in self.down[:level]:
            idx = idx[d.argmax(axis=1)]
        return torch.from_numpy(idx.astype(np.int64))

    def downsample(self, x: Tensor, level: int) -> Tensor:
        """Pool a full-resolution node signal to ``level`` (``D_{level-1} ... D_0 x``).

        Shapes:
            x: (..., N_0, C) -> (..., N_level, C)
        """
        return x.index_select(-2, self.node_index(level).to(x.device))


@cache
def pyramid(template: str, n_levels: int) -> GraphPyramid:
    """The (cached) pyramid of a named template (``"lungs_heart"`` or ``"full"``).

    Raises:
        UsageError: for an unknown template name.
    """
    return GraphPyramid.build(TEMPLATES.get(template), n_levels)
