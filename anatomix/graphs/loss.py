"""Training loss of :class:`~anatomix.graphs.model.HybridGNet`.

.. math::

    \\mathcal{L} = \\mathrm{MSE}(\\hat P, P)
        + w_{\\mathrm{int}} \\frac{1}{|S|} \\sum_{l \\in S} \\mathrm{MSE}(\\hat P_l, D_l P)
        + w_{\\mathrm{KL}} \\, \\mathrm{KL}\\big(\\mathcal{N}(\\mu, \\sigma^2) \\,\\|\\, \\mathcal{N}(0, I)\\big)

with ``P`` the (normalised) target nodes, :math:`\\hat P_l` the intermediate (IGSC) predictions at
the skip levels ``S``, :math:`D_l P` the target pooled to level ``l`` with the decoder's own
selection (:meth:`~anatomix.graphs.pooling.GraphPyramid.downsample`), and the KL divergence
summed over latent dimensions and averaged over the batch:
:math:`\\mathrm{KL} = -\\frac12 \\sum_j (1 + \\log\\sigma_j^2 - \\mu_j^2 - \\sigma_j^2)`.

Note that the original HybridGNet code averages the KL over latent dimensions, so its
``kl_weight = 1e-5`` corresponds to ``1e-5 / latent_dim`` here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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


def hybrid_loss(out: GraphOutput, target: Tensor, kl_weight: float,
                intermediate_weight: float = 1.0) -> tuple[Tensor, dict[str, float]]:
    """HybridGNet loss (see the module docstring).

    Args:
        out: the model's output.
        target: (B, N, 2) target nodes, normalised to [0, 1] like ``out.landmarks``.
        kl_weight: weight of the KL term.
        intermediate_weight: weight of the mean intermediate MSE.

    Returns:
        The scalar loss and its unweighted parts as floats: ``mse``, ``intermediate`` (mean
        over skip levels, 0.0 without skips) and ``kl``.

    Raises:
        ValueError: if ``target`` and ``out.landmarks`` differ in shape.
    """
    if target.shape != out.landmarks.shape:
        raise ValueError(f"target shape {tuple(target.shape)} != landmarks {tuple(out.landmarks.shape)}")
    mse = F.mse_loss(out.landmarks, target)
    levels = [F.mse_loss(p, t) for p, t in zip(out.intermediate, targets_for_levels(target, out), strict=True)]
    intermediate = torch.stack(levels).mean() if levels else mse.new_zeros(())
    kl = kl_divergence(out.mu, out.logvar)
    loss = mse + intermediate_weight * intermediate + kl_weight * kl
    parts = {"mse": mse.item(), "intermediate": intermediate.item(), "kl": kl.item()}
    return loss, parts
