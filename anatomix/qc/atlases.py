"""Build the bundled QC files from training cases: derived RCA atlases and the shape model.

Atlases (``anatomix/weights/qc_atlases.npz``): the training cases are clustered by their
landmarks (k-means on the 120 lungs+heart nodes in the 128-pixel registration frame). For every
cluster, each member image is warped onto the cluster's mean landmarks (piecewise affine on the
landmark triangulation plus the frame border) and the warped images are averaged; the atlas mask
is the rasterised mean contour. So every atlas is an average of at least ``min_members``
patients and no individual patient's image is shipped.

Shape model (``anatomix/weights/shape_model.npz``): :class:`anatomix.qc.shape_model.ShapeModel`
fitted on the same training landmarks, with training-range statistics used by the verdict
(area fractions, cardiothoracic ratio, heart/lung contrast) stored alongside.

The bundled files are written by ``tools/build_qc_atlases.py`` (the command is in
``anatomix/weights/qc_atlases.md``). Only the training part of :func:`anatomix.data.cases.split_cases` (``val_fraction=0.2, seed=0``)
is used, so the validation cases stay unseen.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from anatomix.anatomy import LUNGS_HEART, STRUCTURE_KEYS, landmarks_to_masks
from anatomix.qc.rca import REGISTRATION_SIZE, References


def _load_case(case, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(model-frame normalised image (size, size), landmarks (120, 2) in that frame)."""
    from anatomix.data.preprocess import to_model_frame
    from anatomix.io.read import read_radiograph

    pixels = read_radiograph(case.image).pixels
    img, frame = to_model_frame(pixels, size)
    lm = np.load(case.landmarks)[: LUNGS_HEART.n_nodes]
    return img, frame.points_to_model(lm)


def _warp_to(img: np.ndarray, src_lm: np.ndarray, dst_lm: np.ndarray) -> np.ndarray:
    """Warp ``img`` so that its landmarks ``src_lm`` land on ``dst_lm`` (piecewise affine)."""
    from skimage.transform import PiecewiseAffineTransform, warp

    s = img.shape[0]
    t = np.linspace(0, s, 9)
    border = np.concatenate([np.stack([t, np.zeros_like(t)], 1), np.stack([t, np.full_like(t, s)], 1),
                             np.stack([np.zeros_like(t), t], 1), np.stack([np.full_like(t, s), t], 1)])
    # skimage works in index coordinates (x = col); our continuous frame is index + 0.5
    src = np.concatenate([src_lm, border]) - 0.5
    dst = np.concatenate([dst_lm, border]) - 0.5
    if hasattr(PiecewiseAffineTransform, "from_estimate"):
        tf = PiecewiseAffineTransform.from_estimate(dst, src)  # output (atlas) -> input (case) coords
    else:  # scikit-image < 0.26
        tf = PiecewiseAffineTransform()
        tf.estimate(dst, src)
    return warp(img, tf, output_shape=img.shape, order=1, mode="constant", cval=0.0)


def cluster_means(imgs: np.ndarray, lms: np.ndarray, n_clusters: int, min_members: int = 5,
                  seed: int = 0) -> Tuple[List[np.ndarray], List[np.ndarray], List[int]]:
    """Cluster cases by their landmarks and average each cluster's images on its mean shape.

    Args:
        imgs: ``(N, S, S)`` model-frame images; lms: ``(N, n_nodes, 2)`` their landmarks.
        n_clusters: k-means clusters; clusters under ``min_members`` join their nearest one.

    Returns:
        (per atlas: the mean of the member images warped onto the mean landmarks, intensity
        normalised ``(S, S)``; the mean landmarks ``(n_nodes, 2)``; the member count).
    """
    from scipy.cluster.vq import kmeans2

    from anatomix.data.preprocess import normalise_intensity

    flat = lms.reshape(len(lms), -1)
    _, labels = kmeans2(flat, n_clusters, seed=np.random.default_rng(seed), minit="++")
    # merge clusters that are too small into their nearest big cluster
    while True:
        counts = np.bincount(labels, minlength=labels.max() + 1)
        small = [c for c in range(len(counts)) if 0 < counts[c] < min_members]
        if not small:
            break
        c = small[0]
        centres = {j: flat[labels == j].mean(0) for j in range(len(counts)) if counts[j] and j != c}
        mc = flat[labels == c].mean(0)
        labels[labels == c] = min(centres, key=lambda j: np.linalg.norm(centres[j] - mc))
    images, shapes, members = [], [], []
    for c in sorted(set(labels.tolist())):
        sel = np.flatnonzero(labels == c)
        mean_lm = lms[sel].mean(0)
        warped = np.stack([_warp_to(imgs[i], lms[i], mean_lm) for i in sel])
        images.append(normalise_intensity(warped.mean(0)))
        shapes.append(mean_lm)
        members.append(int(len(sel)))
    return images, shapes, members


def build_atlases(cases: Sequence, n_clusters: int = 12, size: int = REGISTRATION_SIZE,
                  min_members: int = 5, seed: int = 0) -> References:
    """Cluster-mean atlases from labelled cases (images + landmarks); see the module docstring."""
    data = [_load_case(c, size) for c in cases if c.landmarks is not None]
    imgs = np.stack([d[0] for d in data])
    images, shapes, members = cluster_means(imgs, np.stack([d[1] for d in data]), n_clusters, min_members, seed)
    masks = []
    for mean_lm in shapes:
        m = landmarks_to_masks(mean_lm, (size, size), LUNGS_HEART)
        masks.append(np.stack([m[k].astype(np.float32) for k in STRUCTURE_KEYS]))
    ids = [f"atlas{j:02d}" for j in range(len(images))]
    meta = {"kind": "derived cluster-mean atlases", "members": members, "size": size,
            "n_training_cases": int(len(imgs)), "seed": seed}
    return References(np.stack(images).astype(np.float32), np.stack(masks), ids, STRUCTURE_KEYS, meta)


def training_statistics(cases: Sequence) -> dict:
    """Area fractions, CTR and heart/lung contrast ranges over labelled training cases."""
    from anatomix.io.read import read_mask, read_radiograph
    from anatomix.qc.plausibility import plausibility

    rows = []
    for c in cases:
        if not all(k in c.masks for k in STRUCTURE_KEYS):
            continue
        m = {k: read_mask(c.masks[k]) for k in STRUCTURE_KEYS}
        px = read_radiograph(c.image).pixels
        rows.append(plausibility(m, pixels=px))
    stats = {}
    for k in STRUCTURE_KEYS:
        a = np.array([r["area"][k] for r in rows])
        stats[f"area_{k}"] = [float(a.min()), float(a.max())]
    for name in ("ctr", "heart_lung_contrast"):
        v = np.array([r[name] for r in rows], dtype=float)
        stats[name] = [float(np.nanmin(v)), float(np.nanmax(v))]
    stats["n_cases"] = len(rows)
    return stats
