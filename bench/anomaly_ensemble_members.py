"""A further member for the pediatric ensemble: label-free criteria beside the test figures.

For a base ensemble (``--base``, e.g. v1 = ``anomaly`` + rd's forward student) and candidate
detectors (fitted by ``bench/anomaly_pediatric.py``), each candidate is scored with the base's first
member's setup (``ssim+critic``, mean, lungs + heart) and calibrated on the 107 held-out ZhangLab
train normals (``split_calibration``, seed 0), then added to the base, in its masked regions and on
the whole image. Per ensemble:

- **normal-only** criteria, on the 107 held-out normals only: the synthetic-opacity AUROC of
  :mod:`anatomix.anomaly.selection` (the normals vs two painted copies of each), and diversity (Pearson
  r of the candidate's own scores with the base's sum; lower = more diverse);
- **test** figures (report only; 187 normal, 301 pneumonia films of the upstream test split): AUROC, AP,
  TPR at 5 % FPR, and the FPR at the stored threshold.

Masks: the default segmenter's, as ``anatomix anomaly score --segment``.

Usage::

    OMP_NUM_THREADS=1 python bench/anomaly_ensemble_members.py --base runs/anomaly_ensemble_v1.pt \\
        runs/anomaly_ped/mae_c.pt runs/anomaly_ped/memae_c.pt --out bench/results/anomaly_ensemble_members.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", type=Path, nargs="+")
    ap.add_argument("--base", default="anomaly-ensemble", help="registry name or file of the base ensemble")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch

    from anatomix.anomaly.detector import Detector, RegionScoring
    from anatomix.anomaly.ensemble import (
        EnsembleDetector,
        added_member,
    )
    from anatomix.anomaly.metrics import summary
    from anatomix.anomaly.run import segment_masks
    from anatomix.anomaly.selection import synthetic_anomalies
    from anatomix.anomaly.train import split_calibration
    from anatomix.data.anomaly_pack import anomaly_cases
    from anatomix.io import read_radiograph
    from anatomix.io.record import Radiograph
    from anatomix.models import load_detector, load_segmenter

    torch.set_num_threads(1)
    t0 = time.time()
    seg = load_segmenter()
    normals = anomaly_cases(a.data, source="zhanglab", split="train", label="normal")
    held = [read_radiograph(normals[i].path) for i in split_calibration(len(normals))[1]]
    held_masks = segment_masks(held, seg)
    painted, painted_masks = [], []
    for i, r in enumerate(held):  # two painted copies of each held normal, the normal's masks
        for copy in synthetic_anomalies(r.pixels[None].astype(np.float32), copies=2, seed=1000 + i):
            painted.append(Radiograph(copy, path=r.path))
            painted_masks.append(held_masks[i])
    test = anomaly_cases(a.data, source="zhanglab", split="test")
    rads = [read_radiograph(c.path) for c in test]
    test_masks = [m for i in range(0, len(rads), 64) for m in segment_masks(rads[i:i + 64], seg)]
    y = np.array([c.abnormal for c in test], dtype=int)
    base = load_detector(a.base)

    def ensemble(members, whole):
        ens = EnsembleDetector(members, whole_image=whole, scoring=RegionScoring(primary="anatomy"))
        ens.calibrate_radiographs(held, held_masks)
        return ens

    def row(name, ens, diversity="–"):
        clean = [r.score for r in ens.score(held, held_masks)]
        synthetic = summary(np.r_[np.zeros(len(clean)), np.ones(len(painted))].astype(int),
                            clean + [r.score for r in ens.score(painted, painted_masks)])["auroc"]
        res = ens.score(rads, test_masks)
        m = summary(y, [r.score for r in res])
        fpr = np.mean([r.anomalous for r, t in zip(res, y) if t == 0])
        line = (f"| {name} | {synthetic:.3f} | {diversity} | {m['auroc']:.3f} | {m['ap']:.3f} | "
                f"{m['tpr@5%fpr']:.3f} | {fpr:.3f} |")
        print(line, flush=True)
        return line

    base_ens = ensemble(list(base.members), list(base.whole_image))
    base_sum = np.array([r.score for r in base_ens.score(held, held_masks)])
    lines = [row(f"base ({len(base.members)} members)", base_ens)]
    for path in a.candidates:
        cand = added_member(Detector.load(path), base.members[0], held, held_masks)
        own = np.array([r.score for r in cand.score(held, held_masks)])
        r_div = f"{np.corrcoef(own, base_sum)[0, 1]:.3f}"
        for whole, label in ((False, "lungs + heart"), (True, "whole image")):
            ens = ensemble(list(base.members) + [cand], list(base.whole_image) + [whole])
            lines.append(row(f"+ {path.stem} ({label})", ens, r_div))
    cmd = " ".join(["python", "bench/anomaly_ensemble_members.py", *sys.argv[1:]])
    text = "\n".join([
        "# A third member for the pediatric ensemble", "",
        f"`OMP_NUM_THREADS=1 {cmd}` ({time.time() - t0:.0f} s, one thread). Normal-only columns: the 107 held-out "
        "train normals (synthetic-opacity AUROC; diversity = Pearson r of the candidate's own score with the base "
        "sum). Test columns: ZhangLab upstream test split (187 normal, 301 pneumonia), report only.", "",
        "| ensemble | synthetic AUROC (normals) | diversity r (normals) | test AUROC | AP | TPR@5%FPR | "
        "FPR at stored threshold |", "|---|---|---|---|---|---|---|", *lines, ""])
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
