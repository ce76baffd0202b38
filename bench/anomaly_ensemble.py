"""Pediatric protocol: the bundled detector plus the ``forward`` student of an ``rd`` detector, as a
plain sum of z-scores: the members of ``anomaly-ensemble`` measured alone and together.

Each member's image-level score is already a z-score against the same 107 held-out train normals
(``split_calibration``, seed 0: the bundled detector's calibration set and ``rd``'s); the ensemble
score is their plain sum (equal weights, fixed before looking at any test film). The students of
an ``rd`` detector are trained on their own losses, so its ``forward`` student alone is a trained
model; its raw image score is z-scored here on those same 107 normals. Reports test AUROC of each
member and of the sum on the ZhangLab ``split_upstream=test`` films (187 normal, 301 pneumonia),
with masks of the default segmenter as in ``bench/anomaly_rd.py`` (its cache is reused).

Usage::

    OMP_NUM_THREADS=1 python bench/anomaly_ensemble.py --rd runs/anomaly_rd/rd2.pt --work runs/anomaly_rd \
        [--out bench/results/anomaly_ensemble.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomaly_rd import DATA, test_split  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rd", type=Path, required=True, help="an rd detector with a forward student")
    ap.add_argument("--work", type=Path, default=Path("runs/anomaly_rd"), help="bench/anomaly_rd.py's work folder")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch

    from anatomix.anomaly.detector import Detector
    from anatomix.anomaly.ensemble import student_detector
    from anatomix.anomaly.metrics import summary
    from anatomix.anomaly.train import split_calibration
    from anatomix.data.anomaly_pack import anomaly_cases, model_frame_images
    from anatomix.models import load_detector

    torch.set_num_threads(1)
    a.size = 128
    cases, rads, masks, y = test_split(a)
    bundled, rd = load_detector("anomaly"), Detector.load(a.rd)
    ae_z = np.array([r.score for r in bundled.score(rads, masks)])
    normals = anomaly_cases(DATA, source="zhanglab", split="train", label="normal")
    cal = split_calibration(len(normals))[1]
    forward = student_detector(rd, "forward")
    forward.calibrate(model_frame_images([normals[i] for i in cal], rd.image_size))
    fz = np.array([r.score for r in forward.score(rads)])
    rows = [("bundled `anomaly` (ae + critic, lungs + heart)", ae_z), (f"`forward` student of {a.rd} (image)", fz),
            ("sum of the two z-scores", ae_z + fz)]
    lines = ["# Pediatric protocol: bundled detector + rd forward student (sum of z-scores)", "",
             f"Command: `OMP_NUM_THREADS=1 python bench/anomaly_ensemble.py --rd {a.rd} --work {a.work}`", "",
             "| scores | AUROC | AP | TPR@5%FPR |", "|---|---|---|---|"]
    for name, s in rows:
        m = summary(y, s)
        lines.append(f"| {name} | {m['auroc']:.3f} | {m['ap']:.3f} | {m['tpr@5%fpr']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
