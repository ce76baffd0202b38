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

Usage::

    python -m anatomix.qc.atlases --data ../shared/data --out anatomix/weights

Only the training part of :func:`anatomix.data.cases.split_cases` (``val_fraction=0.2, seed=0``)
is used, so the validation cases stay unseen.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from anatomix.anatomy import LUNGS_HEART, landmarks_to_masks
from anatomix.qc.rca import KEYS, REGISTRATION_SIZE, References


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


def build_atlases(cases: Sequence, n_clusters: int = 12, size: int = REGISTRATION_SIZE,
                  min_members: int = 5, seed: int = 0) -> References:
    """Cluster-mean atlases from labelled cases (images + landmarks); see the module docstring."""
    from scipy.cluster.vq import kmeans2

    from anatomix.data.preprocess import normalise_intensity

    data = [_load_case(c, size) for c in cases if c.landmarks is not None]
    imgs = np.stack([d[0] for d in data])
    lms = np.stack([d[1] for d in data])
    flat = lms.reshape(len(lms), -1)
    rng = np.random.default_rng(seed)
    _, labels = kmeans2(flat, n_clusters, seed=rng, minit="++")
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
    images, masks, ids, members = [], [], [], []
    for j, c in enumerate(sorted(set(labels.tolist()))):
        sel = np.flatnonzero(labels == c)
        mean_lm = lms[sel].mean(0)
        warped = np.stack([_warp_to(imgs[i], lms[i], mean_lm) for i in sel])
        images.append(normalise_intensity(warped.mean(0)))
        m = landmarks_to_masks(mean_lm, (size, size), LUNGS_HEART)
        masks.append(np.stack([m[k].astype(np.float32) for k in KEYS]))
        ids.append(f"atlas{j:02d}")
        members.append(int(len(sel)))
    meta = {"kind": "derived cluster-mean atlases", "members": members, "size": size,
            "n_training_cases": int(len(imgs)), "seed": seed}
    return References(np.stack(images).astype(np.float32), np.stack(masks), ids, KEYS, meta)


def training_statistics(cases: Sequence) -> dict:
    """Area fractions, CTR and heart/lung contrast ranges over labelled training cases."""
    from anatomix.io.read import read_mask, read_radiograph
    from anatomix.qc.plausibility import plausibility

    rows = []
    for c in cases:
        if not all(k in c.masks for k in KEYS):
            continue
        m = {k: read_mask(c.masks[k]) for k in KEYS}
        px = read_radiograph(c.image).pixels
        rows.append(plausibility(m, pixels=px))
    stats = {}
    for k in KEYS:
        a = np.array([r["area"][k] for r in rows])
        stats[f"area_{k}"] = [float(a.min()), float(a.max())]
    for name in ("ctr", "heart_lung_contrast"):
        v = np.array([r[name] for r in rows], dtype=float)
        stats[name] = [float(np.nanmin(v)), float(np.nanmax(v))]
    stats["n_cases"] = len(rows)
    return stats


def main(argv: List[str] | None = None) -> None:
    from anatomix.data.cases import pack_cases, split_cases
    from anatomix.qc.shape_model import ShapeModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "weights"))
    ap.add_argument("--clusters", type=int, default=12)
    args = ap.parse_args(argv)
    train, val = split_cases(pack_cases(args.data), 0.2, 0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    refs = build_atlases(train, args.clusters)
    refs.meta["training_statistics"] = training_statistics(train)
    refs.save(out / "qc_atlases.npz")
    lms = np.stack([np.load(c.landmarks)[: LUNGS_HEART.n_nodes] for c in train if c.landmarks is not None])
    sm = ShapeModel.fit(lms)
    sm.save(out / "shape_model.npz")
    print(json.dumps({"train": len(train), "val": len(val), "atlases": refs.ids, "members": refs.meta["members"],
                      "shape_modes": len(sm.variances), "shape_threshold": sm.threshold,
                      "stats": refs.meta["training_statistics"]}, indent=1))


if __name__ == "__main__":
    main()
