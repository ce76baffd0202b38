"""Training loss of :class:`~anatomix.graphs.model.HybridGNet`.

.. math::

    \\mathcal{L} = \\mathrm{MSE}(\\hat P, P)
        + w_{\\mathrm{int}} \\frac{1}{|S|} \\sum_{l \\in S} \\mathrm{MSE}(\\hat P_l, D_l P)
        + w_{\\mathrm{KL}} \\, \\mathrm{KL}\\big(\\mathcal{N}(\\mu, \\sigma^2) \\,\\|\\, \\mathcal{N}(0, I)\\big)

with ``P`` the (normalised) target nodes (averaged over the cases that have landmarks), :math:`\\hat P_l` the intermediate (IGSC) predictions at
the skip levels ``S``, :math:`D_l P` the target pooled to level ``l`` with the decoder's own
selection (:meth:`~anatomix.graphs.pooling.GraphPyramid.downsample`), and the KL divergence
summed over latent dimensions and averaged over the batch:
:math:`\\mathrm{KL} = -\\frac12 \\sum_j (1 + \\log\\sigma_j^2 - \\mu_j^2 - \\sigma_j^2)`.

Cases labelled by masks only (no landmarks) are scored by :func:`boundary_loss`, a symmetric
Chamfer distance between each predicted contour and the boundary of its mask:

.. math::

    \\mathcal{L}_{\\partial} = \\frac{1}{n} \\sum_i \\min_p \\lVert \\hat P_i - Q_p \\rVert^2
        + \\frac{1}{|Q|} \\sum_p \\min_i d\\big(Q_p, [\\hat P_i, \\hat P_{i+1}]\\big)^2

with :math:`Q` points along the mask boundary and :math:`d` the distance to a polygon edge. It
is zero exactly when the closed polygon runs along the boundary, so the mask alone shapes the
contour while the landmark cases in the same batches keep node ``k`` on the same anatomical
point.

Note that the original HybridGNet code averages the KL over latent dimensions, so its
``kl_weight = 1e-5`` corresponds to ``1e-5 / latent_dim`` here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from anatomix.anatomy import TEMPLATES
from anatomix.graphs.model import GraphOutput
from anatomix.graphs.pooling import pyramid


def targets_for_levels(target: Tensor, out: GraphOutput) -> list[Tensor]:
    """Pool full-resolution targets to the level of every intermediate prediction of ``out``.

    Shapes:
        target: (B, N, 2) -> one (B, N_l, 2) per entry of ``out.intermediate``
    """
    if not out.levels:
        return []
    pyr = pyramid(out.template, max(out.levels) + 1)
    return [pyr.downsample(target, level) for level in out.levels]


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, mean over the batch.

    Shapes:
        mu, logvar: (B, D) -> scalar
    """
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def _masked_mean(per_case: Tensor, keep: Tensor | None) -> Tensor:
    """Mean of (B,) values over the cases where ``keep`` (all when None); 0 when none is kept."""
    if keep is None:
        return per_case.mean()
    keep = keep.to(per_case.dtype)
    return (per_case * keep).sum() / keep.sum().clamp(min=1.0)


def hybrid_loss(out: GraphOutput, target: Tensor, kl_weight: float,
                intermediate_weight: float = 1.0,
                has_landmarks: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """HybridGNet loss (see the module docstring).

    Args:
        out: the model's output.
        target: (B, N, 2) target nodes, normalised to [0, 1] like ``out.landmarks``.
        kl_weight: weight of the KL term.
        intermediate_weight: weight of the mean intermediate MSE.
        has_landmarks: (B,) bool, which cases have landmark targets (all when None); the
            others add nothing to the MSE terms (their rows of ``target`` are ignored).

    Returns:
        The scalar loss and its unweighted parts as floats: ``mse``, ``intermediate`` (mean
        over skip levels, 0.0 without skips) and ``kl``.

    Raises:
        ValueError: if ``target`` and ``out.landmarks`` differ in shape.
    """
    if target.shape != out.landmarks.shape:
        raise ValueError(f"target shape {tuple(target.shape)} != landmarks {tuple(out.landmarks.shape)}")
    def mse_of(pred: Tensor, true: Tensor) -> Tensor:
        return _masked_mean((pred - true).pow(2).mean(dim=(1, 2)), has_landmarks)

    mse = mse_of(out.landmarks, target)
    levels = [mse_of(p, t) for p, t in zip(out.intermediate, targets_for_levels(target, out), strict=True)]
    intermediate = torch.stack(levels).mean() if levels else mse.new_zeros(())
    kl = kl_divergence(out.mu, out.logvar)
    loss = mse + intermediate_weight * intermediate + kl_weight * kl
    parts = {"mse": mse.item(), "intermediate": intermediate.item(), "kl": kl.item()}
    return loss, parts


def chamfer_to_boundary(contour: Tensor, boundary: Tensor) -> Tensor:
    """Symmetric squared Chamfer distance between closed polygons and boundary point sets.

    Shapes:
        contour: (B, n, 2) polygon nodes in order (the last joins the first);
        boundary: (B, P, 2) points along the target boundary -> (B,)
    """
    sq = (contour[:, :, None] - boundary[:, None]).pow(2).sum(-1)  # (B, n, P); no sqrt: smooth at 0
    nodes_to_boundary = sq.min(dim=2).values.mean(dim=1)
    a, b = contour, torch.roll(contour, -1, dims=1)  # edges a_i -> b_i
    ab = (b - a)[:, None]  # (B, 1, n, 2)
    aq = boundary[:, :, None] - a[:, None]  # (B, P, n, 2)
    t = ((aq * ab).sum(-1) / ab.pow(2).sum(-1).clamp(min=1e-12)).clamp(0.0, 1.0)
    gap = aq - t[..., None] * ab
    boundary_to_edges = gap.pow(2).sum(-1).min(dim=2).values.mean(dim=1)
    return nodes_to_boundary + boundary_to_edges


def boundary_loss(out: GraphOutput, boundary: Tensor, has_boundary: Tensor) -> Tensor:
    """Mask-level loss of the predicted contours: :func:`chamfer_to_boundary` of every
    structure that has a mask, averaged over those (case, structure) pairs; 0 when none.

    Shapes:
        boundary: (B, K, P, 2) normalised boundary points of the template's K structures;
        has_boundary: (B, K) bool -> scalar
    """
    slices = list(TEMPLATES.get(out.template).slices().values())
    if boundary.shape[1] != len(slices):
        raise ValueError(f"boundary has {boundary.shape[1]} structures, template {len(slices)}")
    per = torch.stack([chamfer_to_boundary(out.landmarks[:, sl], boundary[:, k])
                       for k, sl in enumerate(slices)], dim=1)  # (B, K)
    keep = has_boundary.to(per.dtype)
    return (per * keep).sum() / keep.sum().clamp(min=1.0)
