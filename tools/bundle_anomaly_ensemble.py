"""Build the bundled pediatric ensemble: anatomix/weights/anomaly_ensemble.pt and its card.

Members: the bundled pediatric detector (``anomaly``: ae + realness critic, 64 px, its own
calibration), the ``forward`` student of an ``rd`` detector fitted by ``bench/anomaly_rd.py``
(its students train on their own losses, so the forward one alone is a trained model), scored on
the whole image, and each ``--member`` detector (fitted by ``bench/anomaly_pediatric.py``),
scored with member 1's setup (``ssim+critic``, mean, lungs + heart: fixed before any test film was
scored), each ``--whole-member`` detector scored with its own setup and joined on the whole image
(as ``bench/anomaly_synthetic_members.py`` joins a candidate), and with ``--zones`` a zones detector (:mod:`anatomix.anomaly.zones`) fitted here on the same
non-calibration train normals in the same order (``anatomix anomaly fit`` would sort them and hold out
other films), whose one score joins every region. ``--base ENSEMBLE`` takes the members of an existing ensemble as they are (v1's two are
the files the ``--rd`` path makes) instead of ``--rd``, ``--keep`` only some of them. Every member and the sum
are calibrated on the same 107 held-out ZhangLab train normals (``split_calibration``, seed 0),
the sum with the default segmenter's masks. No abnormal film is read before the card's
test-split figures are measured. Not run by users; the recipe::

    OMP_NUM_THREADS=1 python tools/pretrain_teacher.py --data ../shared/data --work runs/teacher
    OMP_NUM_THREADS=1 python bench/anomaly_rd.py fit --tag rd2 --teacher runs/teacher/teacher.pt --work runs/anomaly_rd
    OMP_NUM_THREADS=1 python bench/anomaly_pediatric.py --method mae --epochs 40 --critic-epochs 30 --tag mae_c \
        --work runs/anomaly_ped
    OMP_NUM_THREADS=1 python tools/bundle_anomaly_ensemble.py --rd runs/anomaly_rd/rd2.pt \
        --member runs/anomaly_ped/mae_c.pt                                          # v2
    OMP_NUM_THREADS=1 python tools/bundle_anomaly_ensemble.py --base runs/anomaly_ensemble_v2.pt \
        --zones                                                                     # v3 = v2 + zones
    OMP_NUM_THREADS=1 python bench/anomaly_pediatric.py --method simsid --image-size 128 --epochs 16 \
        --critic-epochs 15 --tag simsid_c --work runs/anomaly_ped128
    OMP_NUM_THREADS=1 python tools/bundle_anomaly_ensemble.py --base runs/anomaly_ensemble_v3.pt --keep 2,4 \
        --whole-member runs/anomaly_ped128/simsid_c.pt --whole-scoring select/mean   # v4 (normals only)
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ANATOMIX_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "anatomix" / "weights" / "anomaly_ensemble.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--rd", type=Path, help="an rd detector: its forward student is member 2")
    src.add_argument("--base", help="a bundled ensemble whose two members are taken as they are")
    ap.add_argument("--keep", help="with --base: the base members to keep, 1-based, comma-separated (default: all)")
    ap.add_argument("--member", type=Path, action="append", default=[], help="a further detector (repeatable)")
    ap.add_argument("--whole-member", type=Path, action="append", default=[],
                    help="a further detector scored as it is (its own scoring and calibration on the same held-out "
                         "normals), whose image score joins every region: how bench/anomaly_synthetic_members.py "
                         "joins a candidate (repeatable)")
    ap.add_argument("--whole-scoring", metavar="RESIDUAL/REDUCE",
                    help="score the --whole-member detectors with this residual and aggregation (e.g. auto/mean: "
                         "the method's own map; select/mean: the residual whose scores best separate synthetic "
                         "opacities painted on the held-out normals); default: as saved")
    ap.add_argument("--zones", action="store_true",
                    help="fit a zones detector (lung-zone statistics) on the non-calibration train normals, in "
                         "this tool's order, and add it last; its one score joins every region")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    if a.member and a.keep and a.keep.split(",")[0] != "1":
        ap.error("--member is scored with member 1's setup: --keep must keep member 1 first")

    import torch

    from anatomix.anomaly.detector import Detector, RegionScoring, calibrate_on
    from anatomix.anomaly.ensemble import (
        EnsembleDetector,
        added_member,
        student_detector,
    )
    from anatomix.anomaly.metrics import summary
    from anatomix.anomaly.run import read_normals, segment_masks
    from anatomix.anomaly.selection import select_residual
    from anatomix.anomaly.train import split_calibration
    from anatomix.anomaly.zones import IMAGE_SIZE as ZONES_SIZE
    from anatomix.anomaly.zones import ZoneDetector
    from anatomix.data.anomaly_pack import anomaly_cases
    from anatomix.io import read_radiograph
    from anatomix.models import load_detector, load_segmenter

    torch.set_num_threads(1)
    t0 = time.time()
    seg = load_segmenter()
    normals = anomaly_cases(a.data, source="zhanglab", split="train", label="normal")
    held = [read_radiograph(normals[i].path) for i in split_calibration(len(normals))[1]]
    if a.rd is not None:
        forward = student_detector(Detector.load(a.rd), "forward")
        forward.calibrate(np.stack([forward.preprocess(r.pixels)[0] for r in held]))
        members, whole = [load_detector("anomaly"), forward], [False, True]
        names = ["anomaly (bundled ae + critic, 64 px)", f"forward student of {a.rd} (128 px, whole image)"]
    else:
        base = load_detector(a.base)
        keep = [int(i) - 1 for i in a.keep.split(",")] if a.keep else range(len(base.members))
        members, whole, names = ([x[i] for i in keep] for x in (base.members, base.whole_image, base.meta["members"]))
    held_masks = segment_masks(held, seg)
    for path in a.member:
        extra = added_member(Detector.load(path), members[0], held, held_masks)
        members.append(extra)
        whole.append(False)
        names.append(f"{path.name} ({extra.method}, {extra.image_size} px, member 1's scoring)")
    for path in a.whole_member:
        extra = Detector.load(path)
        if a.whole_scoring:
            residual, extra.scoring.reduce = a.whole_scoring.split("/")
            if residual == "select":  # normals only: synthetic opacities painted on the held-out normals
                options = ("auto", "ssim") + (("critic", "ssim+critic") if extra.critic is not None else ())
                residual, aurocs = select_residual(extra, np.stack([extra.preprocess(r.pixels)[0] for r in held]),
                                                   options)
                print(f"{path.name}: synthetic-opacity AUROC per residual "
                      + ", ".join(f"{k} {v:.3f}" for k, v in aurocs.items()) + f" -> {residual}")
            extra.scoring.residual = residual
        calibrate_on(extra, held, held_masks)
        members.append(extra)
        whole.append(True)
        names.append(f"{path.name} ({extra.method}, {extra.image_size} px, {extra.scoring.residual}/{extra.scoring.reduce}, "
                     "whole-image member)")
    if a.zones:
        read = read_normals([c.path for c in normals], ZONES_SIZE, segment=True)  # sorted: fit_order
        at = {Path(p).resolve(): i for i, p in enumerate(read.paths)}
        order = [at[Path(c.path).resolve()] for c in normals]  # back to this tool's order
        zones = ZoneDetector.fit(read.images[order], [read.masks[i] for i in order], calib_fraction=0.1,
                                 seed=0)  # holds out the same 107 as members 1-3
        calibrate_on(zones, held, held_masks)  # the same films and masks: reproduces fit's own calibration
        members.append(zones)
        whole.append(True)
        names.append(f"zones (lung-zone statistics, {zones.meta['n_fit']} normals, 256 px, whole-image member)")
    ens = EnsembleDetector(members, whole_image=whole, scoring=RegionScoring(primary="anatomy"),
                           meta={"command": shlex.join(["python", *sys.argv]), "n_calibration": len(held),
                                 "members": names})
    ens.calibrate_radiographs(held, held_masks)

    test = anomaly_cases(a.data, source="zhanglab", split="test")
    rads = [read_radiograph(c.path) for c in test]
    masks = [m for i in range(0, len(rads), 64) for m in segment_masks(rads[i:i + 64], seg)]
    y = np.array([c.abnormal for c in test], dtype=int)
    res = ens.score(rads, masks)
    m = summary(y, [r.score for r in res])
    flags = np.array([r.anomalous for r in res])
    ens.meta["test"] = {"auroc": m["auroc"], "ap": m["ap"], "tpr@5%fpr": m["tpr@5%fpr"],
                        "fpr_at_threshold": float(flags[y == 0].mean()), "tpr_at_threshold": float(flags[y == 1].mean()),
                        "n_normal": int((y == 0).sum()), "n_abnormal": int((y == 1).sum())}
    ens.save(a.out)
    print(f"{a.out}: test AUROC {m['auroc']:.3f}, AP {m['ap']:.3f}, TPR@5%FPR {m['tpr@5%fpr']:.3f}, "
          f"FPR / TPR at the stored threshold {ens.meta['test']['fpr_at_threshold']:.3f} / "
          f"{ens.meta['test']['tpr_at_threshold']:.3f} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
