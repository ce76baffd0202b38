"""Is the image the right way round? Evidence of a mirrored or rotated radiograph.

- :func:`flip_gain`: the segmenter's result on the left-right flipped image against its result on
  the image (shape-model distance and :func:`heart_offset`); > 0: the image is probably mirrored.
- :func:`orientation_gain`: how much better a 90/180/270-degree rotation of the image matches the
  RCA references than the image itself; :func:`film_orientation_gain` computes it on the film's
  exposed field (border bands and labels in them cropped, as the segmenters see it), which keeps
  films with wide borders (Montgomery) and children's AP films from looking rotated
  (``bench/results/qc_orientation.md``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from anatomix.qc.rca import References

FLIP_SCALES = (3.3, 0.069)
"""Typical sizes of the two terms of ``flip_gain`` (shape-distance difference, heart-offset
difference): their median absolute values over the 157 training images, segmented by a graph
model (measured with ``bench/qc_verdict.py``), so that each term counts about as much as the other."""


def lungs_heart_landmarks(seg) -> Optional[np.ndarray]:
    """(120, 2) lungs+heart landmarks of a segmentation: its own nodes, else traced from masks
    (None when they cannot be traced)."""
    from anatomix.anatomy import LUNGS_HEART, masks_to_landmarks

    lm = seg.landmarks
    keys = tuple(seg.template.keys) if seg.template is not None else ()
    if lm is not None and np.size(lm) and keys[:3] == LUNGS_HEART.keys and len(lm) >= LUNGS_HEART.n_nodes:
        return np.asarray(lm, np.float64)[: LUNGS_HEART.n_nodes]
    try:
        return masks_to_landmarks(seg.masks, LUNGS_HEART)
    except (KeyError, ValueError):
        return None


def heart_offset(landmarks: np.ndarray) -> float:
    """Horizontal offset of the heart's centre from the mid-point of the two lungs' centres, in
    units of the thoracic width, from (120, 2) lungs+heart landmarks; positive towards the image's
    right (the patient's left), where the heart normally lies (at least 0.006 on the training masks)."""
    r, l, h = landmarks[:44], landmarks[44:94], landmarks[94:120]
    mid = 0.5 * (r[:, 0].mean() + l[:, 0].mean())
    width = max(r[:, 0].max(), l[:, 0].max()) - min(r[:, 0].min(), l[:, 0].min())
    return float((h[:, 0].mean() - mid) / max(width, 1e-9))


def flip_gain(segmenter, pixels: np.ndarray, landmarks: np.ndarray, sm) -> float:
    """Evidence that the image is mirrored, from the segmenter's result on the flipped image.

    ``(d(seg) - d(flipped)) / 3.3 - (heart_offset(seg) - heart_offset(flipped)) / 0.069``: positive
    when the flipped image gives the more typical shape and the heart further to the patient's
    left. It is antisymmetric: flipping the image flips its sign.

    Args:
        segmenter: anything with ``predict([Radiograph]) -> [Segmentation]``.
        pixels: (H, W) original-frame image.
        landmarks: (120, 2) lungs+heart landmarks of the segmentation checked.
        sm: the :class:`~anatomix.qc.shape_model.ShapeModel` giving ``d``.

    Returns:
        The gain, NaN when either result has no finite lungs+heart landmarks.
    """
    from anatomix.io.record import Radiograph

    flipped = segmenter.predict([Radiograph(np.ascontiguousarray(pixels[:, ::-1]))])[0]
    lm_f = lungs_heart_landmarks(flipped)
    if lm_f is None or not np.all(np.isfinite(lm_f)) or not np.all(np.isfinite(landmarks)):
        return float("nan")
    g_shape = sm.distance(landmarks) - sm.distance(lm_f)
    g_heart = heart_offset(landmarks) - heart_offset(lm_f)
    return float(g_shape / FLIP_SCALES[0] - g_heart / FLIP_SCALES[1])


def film_orientation_gain(pixels: np.ndarray, refs: References) -> float:
    """:func:`orientation_gain` of an (H, W) original-frame film, on its exposed field
    (:func:`anatomix.data.preprocess.exposed_field`) brought into the references' frame."""
    from anatomix.data.preprocess import to_model_frame

    img, _ = to_model_frame(np.asarray(pixels, np.float32), refs.size, crop_borders=True)
    return orientation_gain(img, refs)


def orientation_gain(image: np.ndarray, refs: References) -> float:
    """Best global NCC of a 90/180/270-degree rotation of the registration-frame ``image`` with
    any reference, minus that of the image itself."""
    r = refs.images.reshape(len(refs), -1)
    r = r - r.mean(axis=1, keepdims=True)
    r = r / (np.linalg.norm(r, axis=1, keepdims=True) + 1e-9)

    def best(x):
        q = x.ravel() - x.mean()
        return float((r @ (q / (np.linalg.norm(q) + 1e-9))).max())

    base = best(image)
    return max(best(np.rot90(image, n)) for n in (1, 2, 3)) - base
