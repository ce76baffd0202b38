"""Agreement between two segmenters on the same image: a cheap, reference-free quality signal.

A graph model (one closed contour per structure, shape prior) and a pixel model (dense
probabilities, no shape prior) fail in different ways: off-domain, the graph keeps a plausible
shape in the wrong place and the pixel model leaks, breaks up or misses parts. Where they agree,
both are probably right; where they disagree, at least one of them is wrong. The signal is the
per-structure Dice between the two models' masks of one image, and its minimum over structures.

Frames: both mask sets must be in the **same** frame and have the same ``(H, W)`` shape. A
:class:`~anatomix.refine.RefinedSegmenter` already computes both models' results in the pixel
model's square frame; it leaves them in ``Segmentation.extra`` (keys
:data:`anatomix.refine.GRAPH_LANDMARKS_KEY`, :data:`anatomix.refine.PIXEL_MASKS_KEY`), so :func:`refined_agreement` costs one
rasterisation per structure at the pixel model's resolution (about 1 ms at 256 px) and no model
call. Dice is a ratio of areas, so comparing in the model frame or in the original frame gives the
same figure up to resampling at the boundary.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from anatomix.anatomy import dice, rasterize
from anatomix.errors import UsageError
from anatomix.refine import GRAPH_LANDMARKS_KEY, PIXEL_MASKS_KEY

AGREEMENT_MIN = "agree_min"
"""Name of the minimum over structures in :func:`agreement_figures`."""


def structure_agreement(masks_a: Mapping[str, np.ndarray], masks_b: Mapping[str, np.ndarray],
                        keys: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Per-structure Dice between two mask sets of one image.

    Args:
        masks_a, masks_b: {structure key: (H, W) bool-like}, both in the same frame.
        keys: structures to compare (default: those present in both, in ``masks_a``'s order).

    Returns:
        {key: Dice in [0, 1]}; 1.0 for a structure empty in both.

    Raises:
        anatomix.errors.UsageError: a structure's two masks differ in shape, or a requested key is missing.
    """
    if keys is None:
        keys = [k for k in masks_a if k in masks_b]
    out: Dict[str, float] = {}
    for k in keys:
        if k not in masks_a or k not in masks_b:
            raise UsageError(f"structure {k!r} is not in both mask sets")
        a, b = np.asarray(masks_a[k], bool), np.asarray(masks_b[k], bool)
        if a.shape != b.shape:
            raise UsageError(f"structure {k!r}: mask shapes differ ({a.shape} vs {b.shape})")
        out[k] = dice(a, b)
    return out


def agreement_figures(per_structure: Mapping[str, float], prefix: str = "agree_") -> Dict[str, float]:
    """Flat QC figures: ``agree_<key>`` per structure and ``agree_min`` (NaN when there are none)."""
    out = {f"{prefix}{k}": float(v) for k, v in per_structure.items()}
    out[f"{prefix}min"] = float(min(per_structure.values())) if per_structure else float("nan")
    return out


def refined_agreement(seg, keys: Optional[Sequence[str]] = None) -> Optional[Dict[str, float]]:
    """Graph-vs-pixel agreement of a :class:`~anatomix.refine.RefinedSegmenter` result.

    Rasterises the graph's (unrefined) contours in the pixel model's frame and compares them
    with the pixel model's thresholded probabilities, both taken from ``seg.extra``.

    Args:
        seg: a :class:`~anatomix.segmentation.Segmentation` whose ``extra`` holds
            :data:`GRAPH_LANDMARKS_KEY` and :data:`PIXEL_MASKS_KEY` (a refined segmenter's result).
        keys: structures to compare (default: the template's structures the pixel model has).

    Returns:
        {key: Dice}, or None when ``seg`` does not carry both models' results (any other family).
    """
    extra = getattr(seg, "extra", None) or {}
    xy, pixel_masks = extra.get(GRAPH_LANDMARKS_KEY), extra.get(PIXEL_MASKS_KEY)
    if xy is None or pixel_masks is None or seg.template is None:
        return None
    contours = seg.template.split(np.asarray(xy, np.float64))
    if keys is None:
        keys = [k for k in contours if k in pixel_masks]
    graph_masks = {k: rasterize(contours[k], np.asarray(pixel_masks[k]).shape) for k in keys}
    return structure_agreement(graph_masks, pixel_masks, keys)
