"""Recompute the stored thresholds of detector files from their kept held-out normal scores.

Every calibration keeps the raw held-out normal scores it was fitted on (``calibration[region]["raw"]``),
so a change of the threshold rule (``anatomix.anomaly.calibration.quantile_threshold``) or of the target
FPR needs no rescoring: this rewrites each file with every threshold (members' and sum's) recomputed at
the file's own target FPR (or ``--target-fpr``). Normalisation centres and scales are recomputed from the
same scores and do not move.

Usage:
    python tools/rethreshold.py anatomix/weights/anomaly_ensemble.pt anatomix/weights/anomaly_adult.pt ...
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--target-fpr", type=float, help="default: each file's own")
    a = ap.parse_args()
    from anatomix.anomaly.detector import Detector

    for path in a.files:
        det = Detector.load(path)
        before = {k: float(c["threshold"]) for k, c in det.calibration.items()}
        det.set_target_fpr(a.target_fpr or det.scoring.target_fpr)
        det.save(path)
        moved = ", ".join(f"{k} {before[k]:.3f} -> {float(c['threshold']):.3f}" for k, c in det.calibration.items())
        print(f"{path}: target {det.scoring.target_fpr:.3f}; {moved}")


if __name__ == "__main__":
    main()
