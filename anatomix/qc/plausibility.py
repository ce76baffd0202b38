"""Plausibility checks of one lungs+heart segmentation: topology, size, position, shape.

Every check works on masks and/or contours in the **original frame** and returns plain numbers;
:mod:`anatomix.qc.verdict` turns them into a pass/fail with reasons.

Conventions: right and left are the patient's sides, so in a correctly oriented radiograph the
right lung (``lungR``) lies on the image's left (smaller x) and the heart sits between the lungs,
shifted towards ``lungL`` (larger x), below the lung apices.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np
from scipy import ndimage

from anatomix.anatomy import contour_self_intersects

MIN_SPECK_FRACTION = 1e-4
"""Components and holes smaller than this fraction of the image area are ignored (anti-aliasing
specks of a resampled mask), so a 1024 x 1024 mask ignores blobs under about 100 pixels."""


def _min_size(shape) -> int:
    return max(1, int(round(MIN_SPECK_FRACTION * shape[0] * shape[1])))


def count_components(mask: np.ndarray, min_size: Optional[int] = None) -> int:
    """Number of 8-connected foreground components of at least ``min_size`` pixels.

    Args:
        mask: (H, W) binary mask.
        min_size: smallest counted component; default :data:`MIN_SPECK_FRACTION` of the image.
    """
    m = np.asarray(mask, bool)
    min_size = _min_size(m.shape) if min_size is None else min_size
    lab, n = ndimage.label(m, structure=np.ones((3, 3)))
    if n == 0:
        return 0
    sizes = np.bincount(lab.ravel())[1:]
    return int((sizes >= min_size).sum())


def count_holes(mask: np.ndarray, min_size: Optional[int] = None) -> int:
    """Number of 4-connected background regions enclosed by the mask (not touching the border),
    of at least ``min_size`` pixels."""
    m = np.asarray(mask, bool)
    min_size = _min_size(m.shape) if min_size is None else min_size
    # the 4-connected background regions that touch no border (what binary_fill_holes fills,
    # without its iterated dilation: one labelling)
    lab, n = ndimage.label(~m)
    if n == 0:
        return 0
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))] = 0
    sizes[0] = 0
    return int((sizes >= min_size).sum())


def _centroid(mask: np.ndarray) -> Optional[np.ndarray]:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


def _extent_x(mask: np.ndarray):
    cols = np.flatnonzero(np.asarray(mask, bool).any(axis=0))
    return (None, None) if cols.size == 0 else (float(cols[0]), float(cols[-1] + 1))


def cardiothoracic_ratio(masks: Mapping[str, np.ndarray]) -> float:
    """Maximal horizontal heart width over maximal thoracic width (outer edges of both lungs).

    Returns NaN when the heart or both lungs are empty.
    """
    hx0, hx1 = _extent_x(masks.get("heart", np.zeros((1, 1), bool)))
    lungs = [masks[k] for k in ("lungR", "lungL") if k in masks]
    if hx0 is None or not lungs:
        return float("nan")
    tx0, tx1 = _extent_x(np.logical_or.reduce(lungs))
    if tx0 is None or tx1 <= tx0:
        return float("nan")
    return (hx1 - hx0) / (tx1 - tx0)


def position_checks(masks: Mapping[str, np.ndarray]) -> Dict[str, object]:
    """Left/right order of the lungs and the heart's place in the thorax.

    Returns:
        ``lr_order_ok``: the right lung's centroid lies on the image's left of the left lung's;
        ``heart_inside_thorax``: the heart's centroid lies horizontally between the two lung
        centroids and vertically below the top of the lungs and above 10 % of the lung height
        under their lowest point;
        ``heart_side_ok``: the heart's centroid lies right of the lungs' mid-line in the image
        (the patient's left), allowing 2 % of the thoracic width of slack.
        Each is None when a needed mask is empty or missing.
    """
    cr = _centroid(masks["lungR"]) if "lungR" in masks else None
    cl = _centroid(masks["lungL"]) if "lungL" in masks else None
    ch = _centroid(masks["heart"]) if "heart" in masks else None
    out: Dict[str, object] = {"lr_order_ok": None, "heart_inside_thorax": None, "heart_side_ok": None}
    if cr is None or cl is None:
        return out
    out["lr_order_ok"] = bool(cr[0] < cl[0])
    if ch is None:
        return out
    lungs = masks["lungR"] | masks["lungL"]
    rows = np.flatnonzero(lungs.any(axis=1))
    top, bottom = rows[0], rows[-1] + 1
    lo_x, hi_x = min(cr[0], cl[0]), max(cr[0], cl[0])
    inside_x = lo_x <= ch[0] <= hi_x
    inside_y = top <= ch[1] <= bottom + 0.1 * (bottom - top)
    out["heart_inside_thorax"] = bool(inside_x and inside_y)
    tx0, tx1 = _extent_x(lungs)
    mid = 0.5 * (cr[0] + cl[0])
    out["heart_side_ok"] = bool(ch[0] >= mid - 0.02 * (tx1 - tx0))
    return out


def intensity_contrast(pixels: Optional[np.ndarray], masks: Mapping[str, np.ndarray]) -> float:
    """Median image intensity inside the heart minus inside the lungs, in units of the image's
    robust range (1st-99th percentile). Lungs are dark and the heart bright on a correctly
    oriented radiograph, so this is clearly positive (about 0.2-0.5 on the JSRT training cases);
    masks laid over the wrong anatomy give values near zero or below. NaN without pixels or masks.
    """
    if pixels is None or "heart" not in masks or not masks["heart"].any():
        return float("nan")
    lungs = np.zeros_like(masks["heart"])
    for k in ("lungR", "lungL"):
        if k in masks:
            lungs = lungs | (masks[k] & ~masks["heart"])
    if not lungs.any():
        return float("nan")
    p = np.asarray(pixels, np.float32)
    if p.shape != lungs.shape:
        return float("nan")
    lo, hi = np.percentile(p, [1, 99])
    if hi - lo < 1e-6:
        return 0.0
    return float((np.median(p[masks["heart"]]) - np.median(p[lungs])) / (hi - lo))


def plausibility(masks: Mapping[str, np.ndarray], landmarks: Optional[np.ndarray] = None,
                 template=None, pixels: Optional[np.ndarray] = None) -> Dict[str, object]:
    """All mask/contour plausibility figures of one image.

    Args:
        masks: {structure key: (H, W) bool} in the original frame (``lungR``, ``lungL``, ``heart``).
        landmarks: (N, 2) contour nodes of ``template`` in the same frame, or None (then the
            self-intersection check is skipped).
        template: the landmark template (needed with ``landmarks``).
        pixels: the (H, W) image, for the intensity-contrast check, or None.

    Returns:
        dict with ``components`` / ``holes`` / ``area`` ({key: value}), ``n_components``,
        ``n_holes`` (sums), ``ctr``, ``lr_order_ok``, ``heart_inside_thorax``, ``heart_side_ok``,
        ``self_intersecting`` (list of keys), ``heart_lung_contrast``.
    """
    masks = {k: np.asarray(m, bool) for k, m in masks.items()}
    shape = next(iter(masks.values())).shape
    total = float(shape[0] * shape[1])
    comps = {k: count_components(m) for k, m in masks.items()}
    holes = {k: count_holes(m) for k, m in masks.items()}
    area = {k: float(m.sum()) / total for k, m in masks.items()}
    crossing = []
    if landmarks is not None and template is not None:
        for k, c in template.split(np.asarray(landmarks)).items():
            if contour_self_intersects(c):
                crossing.append(k)
    out: Dict[str, object] = {
        "components": comps, "holes": holes, "area": area,
        "n_components": int(sum(comps.values())), "n_holes": int(sum(holes.values())),
        "ctr": cardiothoracic_ratio(masks),
        "self_intersecting": crossing,
        "heart_lung_contrast": intensity_contrast(pixels, masks),
    }
    out.update(position_checks(masks))
    return out
