"""What each ingredient of the zones detector buys (report only: it reads labels, it chooses nothing).

The bundled zones members (``anomaly-adult``'s and ``anomaly-ensemble``'s, :mod:`anatomix.anomaly.zones`)
use all 27 features. Here the same Gaussian (:func:`~anatomix.anomaly.zones.fit_gaussian`, shrinkage 0.1)
is fitted on subsets of them, on the same fit normals as the bundled members (the non-calibration part of
``split_calibration``, seed 0), and each subset's Mahalanobis distance is scored:

- adult: the 288 training-split normals of ``bench/anomaly_adult.py`` -> tuberculosis (all 275 films, and the
  55 of the validation split) against the 58 Montgomery + Shenzhen validation normals;
- pediatric: the 1068 ZhangLab train normals -> the upstream test split (187 normal, 301 pneumonia).

Masks: the default segmenter's. Prints a markdown table of AUROCs.

Usage::

    OMP_NUM_THREADS=1 python bench/anomaly_zones_ablation.py --out bench/results/anomaly_zones_ablation.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ANATOMIX_DATA", ROOT.parent / "shared" / "data"))
BLOCK = 9  # features per lung: 3 zones x (mean, std, texture); then right lung, left lung, right - left


def columns(stats=(0, 1, 2), blocks=(0, 1, 2)) -> list[int]:
    """Feature indices of the given statistics (0 mean, 1 std, 2 texture) in the given blocks."""
    return [b * BLOCK + z * 3 + s for b in blocks for z in range(3) for s in stats]


SUBSETS = {
    "all 27 (bundled)": columns(),
    "intensity mean only": columns(stats=(0,)),
    "mean + std (no texture)": columns(stats=(0, 1)),
    "mean + texture (no std)": columns(stats=(0, 2)),
    "no right-left differences (18)": columns(blocks=(0, 1)),
    "right-left differences only (9)": columns(blocks=(2,)),
}


def features(paths, segmenter) -> np.ndarray:
    """Zone features ``(N, 27)`` of films, masks from ``segmenter``, in the zones model frame."""
    from anatomix.anomaly.detector import preprocess
    from anatomix.anomaly.scoring import masks_to_model
    from anatomix.anomaly.zones import IMAGE_SIZE, zone_features
    from anatomix.io import read_radiograph

    out = []
    for i in range(0, len(paths), 32):
        rads = [read_radiograph(p) for p in paths[i:i + 32]]
        for r, s in zip(rads, segmenter.predict(rads)):
            x, frame = preprocess(r.pixels, IMAGE_SIZE)
            out.append(zone_features(x, masks_to_model(s.masks, frame)))
    return np.stack(out)


def aurocs(fit: np.ndarray, tasks: dict) -> dict:
    """AUROC per task and per subset: ``{task: {subset: auroc}}`` (``tasks``: name -> (negatives, positives))."""
    from anatomix.anomaly.metrics import auroc
    from anatomix.anomaly.zones import fit_gaussian, mahalanobis

    out = {}
    for task, (neg, pos) in tasks.items():
        out[task] = {}
        for name, cols in SUBSETS.items():
            mean, std, precision = fit_gaussian(fit[:, cols][np.isfinite(fit).all(1)])
            score = lambda f: mahalanobis((f[:, cols] - mean) / std, precision)  # noqa: E731
            out[task][name] = auroc(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[score(neg), score(pos)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch

    from anatomix.anomaly.run import fit_order
    from anatomix.anomaly.train import split_calibration
    from anatomix.data.anomaly_pack import anomaly_cases
    from anatomix.data.cases import labelled_cases, split_cases
    from anatomix.models import load_segmenter

    torch.set_num_threads(1)
    t0 = time.time()
    seg = load_segmenter()
    train, val = split_cases(labelled_cases(a.data))
    adult_fit = fit_order([c.image for c in train if c.meta.get("label") == "normal"])  # as `anomaly fit` read it
    adult_fit = [adult_fit[i] for i in split_calibration(len(adult_fit))[0]]
    val_ids = {c.case_id for c in val}
    neg = [c.image for c in val if c.meta.get("label") == "normal" and c.source in ("montgomery", "shenzhen")]
    tb = [c for c in train + val if c.meta.get("label") == "tb"]
    ped = [c.path for c in anomaly_cases(a.data, source="zhanglab", split="train", label="normal")]
    ped = [ped[i] for i in split_calibration(len(ped))[0]]
    test = anomaly_cases(a.data, source="zhanglab", split="test")

    tb_f, neg_f = features([c.image for c in tb], seg), features(neg, seg)
    in_val = np.array([c.case_id in val_ids for c in tb])
    adult = aurocs(features(adult_fit, seg), {f"TB, all {len(tb)}": (neg_f, tb_f),
                                              f"TB, validation split ({in_val.sum()})": (neg_f, tb_f[in_val])})
    test_f = features([c.path for c in test], seg)
    y = np.array([c.abnormal for c in test], dtype=bool)
    pediatric = aurocs(features(ped, seg), {"pediatric test": (test_f[~y], test_f[y])})
    tasks = {**adult, **pediatric}
    lines = ["# Zones detector: what each ingredient buys (AUROC; report only, no selection)\n",
             f"`OMP_NUM_THREADS=1 python {' '.join(sys.argv)}` ({time.time() - t0:.0f} s, one thread). Fit normals: "
             f"adult {len(adult_fit)}, pediatric {len(ped)} (the bundled members' fit sets); masks of the default "
             "segmenter. Adult negatives: the 58 Montgomery + Shenzhen validation normals.\n",
             "| features | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for name in SUBSETS:
        lines.append(f"| {name} | " + " | ".join(f"{tasks[t][name]:.3f}" for t in tasks) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
