"""Pass/fail verdict of one mask from its QC figures, with a reason for every failed check.

Thresholds (:class:`Thresholds`, all overridable):

=========================  ==================================================================
reason code                fails when
=========================  ==================================================================
``rca_low``                ``Dice RCA (Mean)`` < 0.70 (CheXmask's recommendation)
``unlike_references``      best global NCC after registration (``rca_similarity``) < 0.50;
                           the image does not look like a frontal CXR in standard orientation
                           (training images: >= 0.65), so RCA and the mask are not trustworthy
``rotated``                ``orientation_gain`` > 0: a 90/180/270-degree rotation of the image
                           matches the references better than the image itself
``missing(<key>)``         a structure mask is empty
``components(<key>=n)``    a structure has more than one component (specks under 1e-4 of the
                           image area ignored)
``holes(<key>=n)``         a structure has enclosed holes (same speck rule)
``area(<key>=a)``          area fraction outside [0.5 x training min, 1.5 x training max]
``lungs_swapped``          the right lung's centroid is not on the image's left of the left lung's
``heart_outside_thorax``   the heart's centroid is not between the lung centroids and within the
                           lungs' vertical extent (+10 % below)
``heart_wrong_side``       the heart's centroid is left of the lungs' mid-line in the image
``ctr(v)``                 cardiothoracic ratio outside [0.25, 0.85]: beyond any cardiomegaly
``self_intersection(k)``   a contour crosses itself (landmark models only)
``shape_outlier(d)``       shape-model distance > the model's threshold (1.5 x the largest
                           held-out training distance)
``mirrored(g)``            ``flip_gain`` > 0: the segmenter's result on the left-right flipped
                           image is the more typical one (shape-model distance and heart
                           offset; only when ``assess`` got the segmenter; 3 of 157 training
                           images exceed 0)
``heart_not_brighter``     heart-minus-lung median intensity < 0.05 of the image range
                           (training cases: >= 0.14): the masks lie over the wrong anatomy
``uncertain(s)``           mean node standard deviation from latent sampling > 1.5 % of the
                           image side (graph models only)
=========================  ==================================================================

Checks whose figure is missing (NaN / None: no image, no landmarks, no sampling) are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple


@dataclass(frozen=True)
class Thresholds:
    """The verdict's thresholds; see the module docstring for their meaning and origin."""

    rca_mean_min: float = 0.70
    similarity_min: float = 0.50
    orientation_gain_max: float = 0.0
    area_factor_low: float = 0.5
    area_factor_high: float = 1.5
    area_ranges: Tuple[Tuple[str, float, float], ...] = (
        ("lungR", 0.0993, 0.2406), ("lungL", 0.0795, 0.2142), ("heart", 0.0581, 0.1428))
    ctr_range: Tuple[float, float] = (0.25, 0.85)
    shape_max: Optional[float] = None  # None: the shape model's own threshold
    flip_gain_max: float = 0.0
    contrast_min: float = 0.05
    node_std_max_fraction: float = 0.015


DEFAULT_THRESHOLDS = Thresholds()


def _num(v) -> Optional[float]:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def verdict(fig: Mapping[str, object], plaus: Optional[Mapping[str, object]] = None,
            thresholds: Thresholds = DEFAULT_THRESHOLDS, shape_threshold: Optional[float] = None,
            image_side: Optional[int] = None) -> Tuple[bool, List[str]]:
    """Decide pass/fail.

    Args:
        fig: the QC columns computed so far (``Dice RCA (Mean)``, ``rca_similarity``, ``ctr``...).
        plaus: the detailed output of :func:`anatomix.qc.plausibility.plausibility` (per-structure
            components, holes, areas, self-intersecting keys), or None.
        thresholds: :class:`Thresholds`.
        shape_threshold: the shape model's threshold (used when ``thresholds.shape_max`` is None).
        image_side: max(H, W) of the image, to scale ``node_std_mean``.

    Returns:
        (qc_pass, reasons): reasons is empty when the mask passes.
    """
    t = thresholds
    reasons: List[str] = []
    v = _num(fig.get("Dice RCA (Mean)"))
    if v is not None and v < t.rca_mean_min:
        reasons.append(f"rca_low({v:.2f})")
    v = _num(fig.get("rca_similarity"))
    if v is not None and v < t.similarity_min:
        reasons.append(f"unlike_references({v:.2f})")
    v = _num(fig.get("orientation_gain"))
    if v is not None and v > t.orientation_gain_max:
        reasons.append("rotated")
    if plaus is not None:
        for k, n in plaus["components"].items():
            if n == 0:
                reasons.append(f"missing({k})")
            elif n > 1:
                reasons.append(f"components({k}={n})")
        for k, n in plaus["holes"].items():
            if n > 0:
                reasons.append(f"holes({k}={n})")
        ranges = {k: (lo, hi) for k, lo, hi in t.area_ranges}
        for k, a in plaus["area"].items():
            if k in ranges and plaus["components"].get(k, 1) > 0:
                lo, hi = ranges[k]
                if not (t.area_factor_low * lo <= a <= t.area_factor_high * hi):
                    reasons.append(f"area({k}={a:.3f})")
        for k in plaus.get("self_intersecting", []):
            reasons.append(f"self_intersection({k})")
    if fig.get("lr_order_ok") is False:
        reasons.append("lungs_swapped")
    if fig.get("heart_inside_thorax") is False:
        reasons.append("heart_outside_thorax")
    elif fig.get("heart_side_ok") is False:
        reasons.append("heart_wrong_side")
    v = _num(fig.get("ctr"))
    if v is not None and not (t.ctr_range[0] <= v <= t.ctr_range[1]):
        reasons.append(f"ctr({v:.2f})")
    v = _num(fig.get("shape_mahalanobis"))
    limit = t.shape_max if t.shape_max is not None else shape_threshold
    if v is not None and limit is not None and v > limit:
        reasons.append(f"shape_outlier({v:.1f})")
    v = _num(fig.get("flip_gain"))
    if v is not None and v > t.flip_gain_max:
        reasons.append(f"mirrored({v:.1f})")
    v = _num(fig.get("heart_lung_contrast"))
    if v is not None and v < t.contrast_min:
        reasons.append(f"heart_not_brighter({v:.2f})")
    v = _num(fig.get("node_std_mean"))
    if v is not None and image_side and v / image_side > t.node_std_max_fraction:
        reasons.append(f"uncertain({v / image_side:.3f})")
    return (not reasons), reasons
