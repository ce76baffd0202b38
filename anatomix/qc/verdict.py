"""Pass/fail verdict of one mask set from its QC figures, with a reason for every failed check.

The rule (:func:`verdict`): a mask set passes when its **predicted Dice** (``Predicted Dice``, the
bundled :class:`~anatomix.qc.quality.DiceModel`: mean over structures) is at or above the model's
threshold (``dice_low(p)`` otherwise; the threshold and how it was chosen are in
``anatomix/weights/qc_dice_model.md``) and it has no **hard failure** (:func:`hard_failures`:
``rotated``, ``missing``, ``components``, ``holes``, ``self_intersection``, ``lungs_swapped``,
``heart_outside_thorax``, ``heart_wrong_side``, ``mirrored``). The other checks
(:func:`notes`: ``rca_low``, ``unlike_references``, ``area``, ``ctr``, ``shape_outlier``,
``heart_not_brighter``, ``uncertain``) are reported in ``qc_notes``; their evidence is part of the
prediction. Without a predicted Dice (``dice_model=False`` in :func:`anatomix.qc.assess`, or no
bundled model) every check below fails the mask, as before.

Thresholds (:class:`Thresholds`, all overridable):

=========================  ==================================================================
reason code                fails when
=========================  ==================================================================
``rca_low``                ``Dice RCA (Mean)`` < 0.70 (CheXmask's recommendation)
``unlike_references``      best global NCC after registration (``rca_similarity``) < 0.50;
                           the image does not look like a frontal CXR in standard orientation
                           (training images: >= 0.65), so RCA and the mask are not trustworthy
``rotated``                ``orientation_gain`` > 0.044: a 90/180/270-degree rotation of the
                           film's exposed field matches the references better than the film
                           itself by more than the largest upright gain over 388 training films
                           (JSRT, Montgomery, Shenzhen, ZhangLab pediatric normals;
                           ``bench/qc_orientation.py``)
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
    orientation_gain_max: float = 0.044
    area_factor_low: float = 0.5
    area_factor_high: float = 1.5
    area_ranges: Tuple[Tuple[str, float, float], ...] = (
        ("lungR", 0.0993, 0.2406), ("lungL", 0.0795, 0.2142), ("heart", 0.0581, 0.1428))
    ctr_range: Tuple[float, float] = (0.25, 0.85)
    shape_max: Optional[float] = None  # None: the shape model's own threshold
    flip_gain_max: float = 0.0
    contrast_min: float = 0.05
    node_std_max_fraction: float = 0.015
    pred_dice_min: Optional[float] = None  # None: the predicted-Dice model's own threshold


DEFAULT_THRESHOLDS = Thresholds()


def _num(v) -> Optional[float]:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def hard_failures(fig: Mapping[str, object], plaus: Optional[Mapping[str, object]] = None,
                  thresholds: Thresholds = DEFAULT_THRESHOLDS) -> List[str]:
    """Reasons that fail a mask set whatever its predicted Dice: wrong topology (a structure
    missing, in pieces, with holes, or a contour crossing itself), swapped sides, the heart outside
    the thorax or on the wrong side, and a rotated or mirrored film.

    Args:
        fig: the QC columns computed so far (``lr_order_ok``, ``orientation_gain``...).
        plaus: :func:`anatomix.qc.plausibility.plausibility` of the masks, or None.
        thresholds: :class:`Thresholds` (orientation and flip limits).
    """
    t = thresholds
    reasons: List[str] = []
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
        for k in plaus.get("self_intersecting", []):
            reasons.append(f"self_intersection({k})")
    if fig.get("lr_order_ok") is False:
        reasons.append("lungs_swapped")
    if fig.get("heart_inside_thorax") is False:
        reasons.append("heart_outside_thorax")
    elif fig.get("heart_side_ok") is False:
        reasons.append("heart_wrong_side")
    v = _num(fig.get("flip_gain"))
    if v is not None and v > t.flip_gain_max:
        reasons.append(f"mirrored({v:.1f})")
    return reasons


def notes(fig: Mapping[str, object], plaus: Optional[Mapping[str, object]] = None,
          thresholds: Thresholds = DEFAULT_THRESHOLDS, shape_threshold: Optional[float] = None,
          image_side: Optional[int] = None) -> List[str]:
    """The soft checks: RCA, similarity to the references, area, CTR, shape-model distance,
    heart-lung contrast, node uncertainty. With a predicted Dice they are reported as notes (their
    evidence is already inside the prediction); without one they fail the mask as before.

    Args: as :func:`verdict`.
    """
    t = thresholds
    out: List[str] = []
    v = _num(fig.get("Dice RCA (Mean)"))
    if v is not None and v < t.rca_mean_min:
        out.append(f"rca_low({v:.2f})")
    v = _num(fig.get("rca_similarity"))
    if v is not None and v < t.similarity_min:
        out.append(f"unlike_references({v:.2f})")
    if plaus is not None:
        ranges = {k: (lo, hi) for k, lo, hi in t.area_ranges}
        for k, a in plaus["area"].items():
            if k in ranges and plaus["components"].get(k, 1) > 0:
                lo, hi = ranges[k]
                if not (t.area_factor_low * lo <= a <= t.area_factor_high * hi):
                    out.append(f"area({k}={a:.3f})")
    v = _num(fig.get("ctr"))
    if v is not None and not (t.ctr_range[0] <= v <= t.ctr_range[1]):
        out.append(f"ctr({v:.2f})")
    v = _num(fig.get("shape_mahalanobis"))
    limit = t.shape_max if t.shape_max is not None else shape_threshold
    if v is not None and limit is not None and v > limit:
        out.append(f"shape_outlier({v:.1f})")
    v = _num(fig.get("heart_lung_contrast"))
    if v is not None and v < t.contrast_min:
        out.append(f"heart_not_brighter({v:.2f})")
    v = _num(fig.get("node_std_mean"))
    if v is not None and image_side and v / image_side > t.node_std_max_fraction:
        out.append(f"uncertain({v / image_side:.3f})")
    return out


def verdict(fig: Mapping[str, object], plaus: Optional[Mapping[str, object]] = None,
            thresholds: Thresholds = DEFAULT_THRESHOLDS, shape_threshold: Optional[float] = None,
            image_side: Optional[int] = None,
            dice_threshold: Optional[float] = None) -> Tuple[bool, List[str], List[str]]:
    """Decide pass/fail.

    With a predicted Dice (``fig["Predicted Dice"]`` finite and a threshold: ``thresholds.pred_dice_min``
    or else ``dice_threshold``, the bundled model's), a mask set passes when its predicted Dice is
    at or above the threshold and it has no :func:`hard_failures`; the soft checks
    (:func:`notes`) are returned as notes. Without one, every check fails the mask (the rule
    before the predicted Dice existed).

    Args:
        fig: the QC columns computed so far (``Predicted Dice``, ``Dice RCA (Mean)``, ``ctr``...).
        plaus: the detailed output of :func:`anatomix.qc.plausibility.plausibility` (per-structure
            components, holes, areas, self-intersecting keys), or None.
        thresholds: :class:`Thresholds`.
        shape_threshold: the shape model's threshold (used when ``thresholds.shape_max`` is None).
        image_side: max(H, W) of the image, to scale ``node_std_mean``.
        dice_threshold: the predicted-Dice model's own threshold.

    Returns:
        (qc_pass, reasons, notes): reasons is empty when the mask passes.
    """
    reasons = hard_failures(fig, plaus, thresholds)
    soft = notes(fig, plaus, thresholds, shape_threshold, image_side)
    p = _num(fig.get("Predicted Dice"))
    limit = thresholds.pred_dice_min if thresholds.pred_dice_min is not None else dice_threshold
    if p is None or limit is None or math.isnan(limit):
        return (not reasons and not soft), reasons + soft, []
    if p < limit:
        reasons.insert(0, f"dice_low({p:.2f})")
    return (not reasons), reasons, soft
