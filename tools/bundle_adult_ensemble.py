"""Build the bundled adult detector: anatomix/weights/anomaly_adult.pt, an ensemble of two normal-only
detectors fitted on the same 288 adult training-split normals.

Members: an ``rd`` detector (reverse distillation, 128 px: texture inside the lungs) and a ``zones``
detector (:mod:`anatomix.anomaly.zones`: density and texture statistics of the six lung zones and
their left-right symmetry; no training), both made by ``anatomix anomaly fit`` on the same list with
the same seed, so both hold out the same 29 normals (``split_calibration``, seed 0, over the order in which
``anatomix anomaly fit`` reads its inputs: :func:`anatomix.anomaly.run.fit_order`). The zones
member's score joins every region of the rd member (``whole_image``); equal weights, fixed before
any abnormal film was scored. Every member and the sum are calibrated on those 29 held-out normals
with the current default segmenter's masks (run this again whenever the default segmenter changes).
No abnormal film is read here; ``bench/anomaly_adult.py --detector`` measures the result. The recipe::

    git show 6191aca:anatomix/weights/anomaly_adult.pt > runs/adult_rd.pt          # the rd detector (v1)
    OMP_NUM_THREADS=1 python bench/anomaly_adult.py --method zones --work runs/anomaly_adult_zones
    OMP_NUM_THREADS=1 python tools/bundle_adult_ensemble.py --rd runs/adult_rd.pt \\
        --zones runs/anomaly_adult_zones/adult_zones.pt
    OMP_NUM_THREADS=1 python bench/anomaly_adult.py --detector anatomix/weights/anomaly_adult.pt \\
        --work runs/anomaly_adult_ens --out bench/results/anomaly_adult_ensemble.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ANATOMIX_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "anatomix" / "weights" / "anomaly_adult.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rd", type=Path, required=True, help="the rd detector fitted on the adult normals")
    ap.add_argument("--zones", type=Path, required=True, help="the zones detector fitted on the same normals")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()

    import numpy as np
    import torch

    from anatomix.anomaly.detector import Detector, RegionScoring, calibrate_on
    from anatomix.anomaly.ensemble import EnsembleDetector
    from anatomix.anomaly.run import fit_order, segment_masks
    from anatomix.anomaly.train import split_calibration
    from anatomix.data.cases import labelled_cases, split_cases
    from anatomix.io import read_radiograph

    torch.set_num_threads(1)
    t0 = time.time()
    train, _ = split_cases(labelled_cases(a.data))
    # bench/anomaly_adult.py's fit list, in the order `anatomix anomaly fit` read it (sorted paths)
    normals = fit_order([c.image for c in train if c.meta.get("label") == "normal"])
    held = [read_radiograph(normals[i]) for i in split_calibration(len(normals))[1]]
    rd, zones = Detector.load(a.rd), Detector.load(a.zones)
    masks = segment_masks(held)
    for name, det in (("rd", rd), ("zones", zones)):  # the films each member held out, and no others
        stored = np.sort(det.calibration["image"]["raw"])
        again = np.sort([r.raw["image"] for r in det.score(held, masks)])
        if stored.shape != again.shape or not np.allclose(stored, again, rtol=1e-3, atol=1e-6):
            sys.exit(f"{name}: its calibration scores are not those of the {len(held)} normals held out from these "
                     f"{len(normals)}: fit it with `anatomix anomaly fit` on bench/anomaly_adult.py's list (and the "
                     f"current default segmenter)")
    for det in (rd, zones):
        calibrate_on(det, held, masks)
    ens = EnsembleDetector([rd, zones], whole_image=[False, True], scoring=RegionScoring(primary=rd.scoring.primary),
                           meta={"command": shlex.join(["python", *sys.argv]), "n_calibration": len(held),
                                 "members": [f"rd ({a.rd.name}, {rd.image_size} px)",
                                             f"zones ({a.zones.name}, lung-zone statistics, whole-image member)"]})
    ens.calibrate_radiographs(held, masks)
    ens.save(a.out)
    print(f"{a.out}: {ens!r}, calibrated on {len(held)} held-out normals ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
