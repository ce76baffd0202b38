"""Does a new ensemble member help? The normal-only judgement: synthetic opacities on held-out normals.

The held-out calibration normals of a population (``split_calibration``, seed 0, of the fit list in
the order its detectors were fitted: the 107 ZhangLab train normals of the pediatric detectors, manifest
order, or the 29 adult training-split normals of ``anomaly-adult``, ``anatomix anomaly fit``'s sorted order) are taken to the 256-px square frame with their default-segmenter masks; each is
copied 3 times with simulated opacities (:func:`anatomix.anomaly.selection.synthetic_anomalies`,
seed 0) and the clean normals are scored against the copies, masks kept, by: the base detector,
the candidate member alone, and the base with the candidate added as a whole-image member
(equal weight; the sum calibrated on the same clean normals). No abnormal film or label is read.

The rule, written down before the pediatric test split was scored with a zones member: the candidate
joins the base ensemble if and only if base + candidate separates the synthetic copies better
(higher AUROC) than the base.

Usage:
    python bench/anomaly_synthetic_members.py --population pediatric --base runs/anomaly_ensemble_v2.pt \
        --candidate runs/ped_zones/ped_zones.pt --out bench/results/anomaly_synthetic_members_pediatric.md
    python bench/anomaly_synthetic_members.py --population adult --base runs/adult_rd.pt \
        --candidate runs/anomaly_adult_zones/adult_zones.pt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ANATOMIX_DATA", ROOT.parent / "shared" / "data"))
FRAME = 256


def held_out_normals(population: str, data: Path) -> list:
    """Original-frame radiographs of the population's held-out calibration normals."""
    from anatomix.anomaly.train import split_calibration
    from anatomix.io import read_radiograph

    if population == "pediatric":
        from anatomix.data.anomaly_pack import anomaly_cases

        paths = [c.path for c in anomaly_cases(data, source="zhanglab", split="train", label="normal")]
    else:  # the adult detectors were fitted by `anatomix anomaly fit`, which reads its inputs sorted
        from anatomix.anomaly.run import fit_order
        from anatomix.data.cases import labelled_cases, split_cases

        paths = fit_order([c.image for c in split_cases(labelled_cases(data))[0] if c.meta.get("label") == "normal"])
    return [read_radiograph(paths[i]) for i in split_calibration(len(paths))[1]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--population", choices=("pediatric", "adult"), required=True)
    ap.add_argument("--base", required=True, help="detector or ensemble: a file or a bundled name")
    ap.add_argument("--candidate", type=Path, required=True, help="the detector that might join it")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch

    from anatomix.anomaly.detector import (
        Detector,
        RegionScoring,
        calibrate_on,
        preprocess,
    )
    from anatomix.anomaly.ensemble import EnsembleDetector
    from anatomix.anomaly.metrics import auroc
    from anatomix.anomaly.run import segment_masks
    from anatomix.anomaly.scoring import masks_to_model
    from anatomix.anomaly.selection import synthetic_anomalies
    from anatomix.io import Radiograph
    from anatomix.models import load_detector

    torch.set_num_threads(1)
    held = held_out_normals(a.population, a.data)
    masks = segment_masks(held)
    base, candidate = load_detector(a.base), Detector.load(a.candidate)
    members = list(base.members) if isinstance(base, EnsembleDetector) else [base]
    whole = list(base.whole_image) if isinstance(base, EnsembleDetector) else [False]
    calibrate_on(candidate, held, masks)
    joined = EnsembleDetector(members + [candidate], whole + [True],
                              RegionScoring(primary=base.scoring.primary, target_fpr=base.scoring.target_fpr))
    joined.calibrate_radiographs(held, masks)

    images, model_masks = [], []
    for r, m in zip(held, masks):
        x, frame = preprocess(r.pixels, FRAME)
        images.append(x)
        model_masks.append({k: v.astype(np.float32) for k, v in masks_to_model(m, frame).items()})
    copies = 3
    clean = [Radiograph(pixels=x) for x in images]
    painted = [Radiograph(pixels=x) for x in synthetic_anomalies(np.stack(images), copies, seed=0)]
    y = np.r_[np.zeros(len(clean)), np.ones(len(painted))]
    lines = [f"# Synthetic opacities on {len(held)} held-out {a.population} normals ({copies} copies each)\n",
             f"Command: `python {' '.join(sys.argv)}`\n", "| detector | synthetic-opacity AUROC |", "|---|---:|"]
    verdict = {}
    for name, det in ((f"base ({a.base})", base), (f"candidate ({a.candidate.name})", candidate),
                      ("base + candidate", joined)):
        s0 = [r.score for r in det.score(clean, model_masks)]
        s1 = [r.score for r in det.score(painted, [m for m in model_masks for _ in range(copies)])]
        verdict[name] = auroc(y, np.r_[s0, s1])
        lines.append(f"| {name} | {verdict[name]:.3f} |")
    base_auc, joined_auc = verdict[f"base ({a.base})"], verdict["base + candidate"]
    lines.append(f"\nRule: the candidate joins if base + candidate > base: "
                 f"{joined_auc:.3f} vs {base_auc:.3f} -> {'JOIN' if joined_auc > base_auc else 'do not join'}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
