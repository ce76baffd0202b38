"""Pediatric protocol for the feature-distillation detector (``rd``), beside the bundled detector.

Fit on the ZhangLab ``split_upstream=train`` NORMAL films of the data pack (manifest order;
:func:`anatomix.anomaly.train.split_fit`, seed 0: 913 train the students, 48 judge the epochs
with synthetic opacities, 107 calibrate), report on its ``split_upstream=test`` films (187
normal, 301 pneumonia). The teacher comes from ``tools/pretrain_teacher.py`` (normals only; the
48 + 107 hold-outs excluded). The epoch is chosen from normals only; the test split only reports.

Masks: the default segmenter's (``anatomix.anomaly.run.segment_masks``), for the calibration
normals and the test films alike, as ``anatomix anomaly score --segment`` does.

Usage (resumable: rerun ``fit`` and it continues from ``WORK/TAG.ckpt``)::

    OMP_NUM_THREADS=1 python bench/anomaly_rd.py fit --tag T --teacher runs/teacher/teacher.pt --work W
    OMP_NUM_THREADS=1 python bench/anomaly_rd.py report --tag T --work W --out bench/results/anomaly_rd.md

``report`` scores the test split with the ``rd`` detector and the bundled one in one process
(same radiographs, same masks, same code path as ``anatomix anomaly score --segment``), the
students one by one, and, clearly marked, the epochs a label-using selection would have kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from anatomix.data.anomaly_pack import (
    anomaly_cases,
    model_frame_images,
    model_frame_masks,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ANATOMIX_DATA", ROOT.parent / "shared" / "data"))
REGIONS = ("image", "lungs", "anatomy")


def cached(path: Path, make):
    """``make()`` (a dict of arrays) saved to / read from an ``.npz``."""
    if path.is_file():
        return dict(np.load(path))
    out = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def pack_masks(masks: list) -> np.ndarray:
    """Per image ``{lungR, lungL, heart}`` bool masks -> ``(N, 3, H, W)`` bool."""
    return np.stack([np.stack([m[k] for k in ("lungR", "lungL", "heart")]) for m in masks])


def unpack_masks(arr: np.ndarray) -> list:
    return [dict(zip(("lungR", "lungL", "heart"), a)) for a in arr]


def fit(a) -> None:
    """Fit ``rd`` on the train-split normals (selection and calibration from normals only)."""
    import torch

    from anatomix.anomaly.detector import ScoringConfig
    from anatomix.anomaly.models import fit_defaults
    from anatomix.anomaly.train import fit_detector, split_fit

    torch.set_num_threads(a.threads)
    cases = anomaly_cases(DATA, source="zhanglab", split="train", label="normal")
    x = cached(a.work / f"train_normals_{a.size}.npz", lambda: {"x": model_frame_images(cases, a.size)})["x"]
    cal = split_fit(len(x))[2]
    cm = cached(a.work / f"calibration_masks_{a.size}.npz",
                lambda: {"m": pack_masks(model_frame_masks([cases[i] for i in cal], a.size))})["m"]
    calib_masks = [None] * len(x)
    for i, m in zip(cal, unpack_masks(cm)):
        calib_masks[i] = m
    d = fit_defaults("rd")
    config = {"students": a.students, "teacher": str(a.teacher), "channels": a.channels}
    t0 = time.time()
    det = fit_detector(x, "rd", a.size, epochs=a.epochs or d["epochs"], batch_size=32, lr=a.lr or d["lr"],
                       calib_masks=calib_masks, scoring=ScoringConfig(residual="auto", reduce=d["reduce"],
                                                                      smooth_sigma=d["smooth"]),
                       seed=0, checkpoint=a.work / f"{a.tag}.ckpt", model_config=config, select=True,
                       snapshots=a.work / f"{a.tag}_epochs", progress=False, log=lambda s: print(s, flush=True),
                       meta={"command": " ".join(shlex.quote(v) for v in ["python", *sys.argv])})
    det.save(a.work / f"{a.tag}.pt")
    print(f"{a.work / a.tag}.pt written ({time.time() - t0:.0f} s this run)")


def test_split(a):
    """(cases, radiographs, original-frame masks, labels) of the test split."""
    from anatomix.anomaly.run import segment_masks
    from anatomix.io import read_radiograph

    cases = anomaly_cases(DATA, source="zhanglab", split="test")
    rads = [read_radiograph(c.path) for c in cases]

    def make():
        return {"m": pack_masks([m for i in range(0, len(rads), 64) for m in segment_masks(rads[i:i + 64])])}

    masks = unpack_masks(cached(a.work / "test_masks.npz", make)["m"])
    return cases, rads, masks, np.array([c.abnormal for c in cases], dtype=int)


def score(det, rads, masks) -> tuple[list, float]:
    """(results, images/s) of ``det.score`` in batches of 64 (preprocessing + model + region scores)."""
    t0 = time.perf_counter()
    res = [r for i in range(0, len(rads), 64) for r in det.score(rads[i:i + 64], masks[i:i + 64])]
    return res, len(rads) / (time.perf_counter() - t0)


def row(name: str, det, res, y, speed: float, fit_s: float) -> dict:
    from anatomix.anomaly.metrics import summary

    flag = np.array([r.anomalous for r in res])
    out = {"name": name, "img_per_s": speed, "fit_s": fit_s, "region": res[0].score_region,
           "score": summary(y, [r.score for r in res]), "fpr_thr": float(flag[y == 0].mean()),
           "tpr_thr": float(flag[y == 1].mean())}
    for g in REGIONS:
        out[g] = summary(y, [r.raw[g] for r in res])["auroc"]
    return out


def student_aurocs(det, rads, masks, y) -> dict[str, dict[str, float]]:
    """AUROC of each student's map alone (raw region scores; the ranking needs no calibration)."""
    from torch import nn

    from anatomix.anomaly.metrics import auroc
    from anatomix.anomaly.scoring import masks_to_model

    model, students = det.model, det.model.students
    pre = [det.preprocess(r.pixels) for r in rads]
    imgs = np.stack([p[0] for p in pre])
    mm = [masks_to_model(m, p[1]) for m, p in zip(masks, pre)]
    out = {}
    try:
        for i, kind in enumerate(model.config["students"]):
            model.students = nn.ModuleList([students[i]])
            raw = [det.raw_scores(m, k) for m, k in zip(det.model_maps(imgs), mm)]
            out[kind] = {g: auroc(y, [r[g] for r in raw]) for g in REGIONS}
    finally:
        model.students = students
    return out


def epoch_aurocs(a, det, rads, masks, y) -> list[dict]:
    """Test AUROC (raw ``lungs`` and ``image`` scores) of every ``--every``-th kept epoch, with the
    normal-only selection score of that epoch: what label-using selection would pick."""
    from anatomix.anomaly.metrics import auroc
    from anatomix.anomaly.scoring import masks_to_model
    from anatomix.models import load_checkpoint

    pre = [det.preprocess(r.pixels) for r in rads]
    imgs = np.stack([p[0] for p in pre])
    mm = [masks_to_model(m, p[1]) for m, p in zip(masks, pre)]
    sel = {h["epoch"]: h for h in det.meta["selection_history"]}
    keep = {k: v.clone() for k, v in det.model.state_dict().items()}
    out = []
    try:
        for p in sorted((a.work / f"{a.tag}_epochs").glob("epoch_*.pt"))[a.every - 1::a.every]:
            e = int(p.stem.split("_")[1])
            det.model.load_state_dict(load_checkpoint(p))
            raw = [det.raw_scores(m, k) for m, k in zip(det.model_maps(imgs), mm)]
            out.append({"epoch": e, "select_score": sel[e]["select_score"],
                        **{g: auroc(y, [r[g] for r in raw]) for g in ("image", "lungs")}})
            print(out[-1], flush=True)
    finally:
        det.model.load_state_dict(keep)
    return out


def report(a) -> None:
    import torch

    from anatomix.anomaly.detector import Detector
    from anatomix.models import load_detector

    torch.set_num_threads(a.threads)
    cases, rads, masks, y = test_split(a)
    rd = Detector.load(a.work / f"{a.tag}.pt")
    bundled = load_detector("anomaly")
    rows = []
    for name, det in (("bundled `anomaly` (ae + critic, 64 px)", bundled), (f"rd `{a.tag}` (128 px)", rd)):
        res, speed = score(det, rads, masks)
        rows.append(row(name, det, res, y, speed, float(det.meta["fit_seconds"])))
    students = student_aurocs(rd, rads, masks, y) if len(rd.model.config["students"]) > 1 else {}
    epochs = epoch_aurocs(a, rd, rads, masks, y) if a.every else []
    (a.work / f"{a.tag}_report.json").write_text(json.dumps({"rows": rows, "students": students, "epochs": epochs},
                                                            indent=1))
    text = render(a, rd, rows, students, epochs)
    print(text)
    if a.out:
        a.out.write_text(text)


def render(a, rd, rows, students, epochs) -> str:
    m = rd.meta
    tm = m.get("teacher_meta", {})
    base, new = rows
    L = ["# Feature-distillation detector (`rd`) on the pediatric protocol", "",
         "Fit on the ZhangLab `split_upstream=train` normals of the data pack, reported on its `split_upstream=test` "
         f"films ({base['score']['n_normal']} normal, {base['score']['n_abnormal']} pneumonia). Masks of the default "
         "segmenter for calibration normals and test films (as `anatomix anomaly score --segment`). The `rd` epoch "
         "was chosen from NORMALS only (synthetic opacities on 48 held-out normals, "
         "`anatomix.anomaly.selection`); no abnormal film was read before the test split was scored.", "",
         "Commands:", "",
         f"    {tm.get('command', '(teacher: see teacher meta)')}",
         f"    OMP_NUM_THREADS=1 {m.get('command', '')}",
         f"    OMP_NUM_THREADS=1 python bench/anomaly_rd.py report --tag {a.tag} --work {a.work} --every {a.every}"
         + (f" --out {a.out}" if a.out else ""), "",
         f"`rd` model: students {rd.model.config['students']}, teacher widths {rd.model.config['channels']} "
         f"(teacher pretrained {tm.get('epochs')} epochs by masked in-painting + denoising on {sum(tm.get('counts', {}).values())} "
         f"normals {tm.get('counts')}, {tm.get('train_seconds', 0):.0f} s); students {m['epochs']} epochs, lr {m['lr']}, "
         f"selected epoch {m['selected_epoch']}; scoring {rd.scoring.residual}/{rd.scoring.reduce} "
         f"{rd.scoring.topk:g} %/smooth {rd.scoring.smooth_sigma:g} px; score region `{new['region']}`.", "",
         "| detector | score region | AUROC | AP | TPR@5%FPR | FPR / TPR at stored threshold | AUROC image / lungs / anatomy "
         "| fit time (s) | scoring (img/s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["score"]
        L.append(f"| {r['name']} | {r['region']} | **{s['auroc']:.3f}** | {s['ap']:.3f} | {s['tpr@5%fpr']:.3f} "
                 f"| {r['fpr_thr']:.3f} / {r['tpr_thr']:.3f} | {r['image']:.3f} / {r['lungs']:.3f} / {r['anatomy']:.3f} "
                 f"| {r['fit_s']:.0f} | {r['img_per_s']:.1f} |")
    L += ["", f"Ratios rd / bundled: fit time {new['fit_s'] / base['fit_s']:.2f}x (students only; the teacher's "
          f"{tm.get('train_seconds', 0):.0f} s once more for both together: "
          f"{(new['fit_s'] + tm.get('train_seconds', 0)) / base['fit_s']:.2f}x), scoring speed "
          f"{new['img_per_s'] / base['img_per_s']:.2f}x. Bundled fit time is from its file (another session, shared CPU); "
          "scoring speeds measured in this one process, one thread, from read radiographs and masks "
          "(preprocessing + model + region scores)."]
    if students:
        L += ["", "**Each student alone** (test AUROC of raw region scores; same model, the other student left out):", "",
              "| students | image | lungs | anatomy |", "|---|---|---|---|"]
        L += [f"| {k} | {v['image']:.3f} | {v['lungs']:.3f} | {v['anatomy']:.3f} |" for k, v in students.items()]
        L.append(f"| both (the detector) | {new['image']:.3f} | {new['lungs']:.3f} | {new['anatomy']:.3f} |")
    if epochs:
        best = max(epochs, key=lambda e: e["lungs"])
        L += ["", "**Label-using selection (NOT the detector's protocol; for comparison with SQUID / SimSID, which keep "
              "the checkpoint with the best AUROC on a labelled split).** Test AUROC of every "
              f"{'' if a.every == 1 else f'{a.every}th '}epoch's students (raw scores) beside the normal-only "
              "selection score:", "",
              "| epoch | normal-only selection score | test AUROC image | test AUROC lungs |", "|---|---|---|---|"]
        L += [f"| {e['epoch']}{' (normal-selected)' if e['epoch'] == m['selected_epoch'] else ''} "
              f"| {e['select_score']:.4f} | {e['image']:.3f} | {e['lungs']:.3f} |" for e in epochs]
        L.append(f"\nLabel-selected on the test split itself (an upper bound, the anchors' practice): epoch "
                 f"{best['epoch']}, lungs AUROC {best['lungs']:.3f}.")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("fit", "report"):
        p = sub.add_parser(name)
        p.add_argument("--tag", required=True)
        p.add_argument("--work", type=Path, default=Path("runs/anomaly_rd"))
        p.add_argument("--size", type=int, default=128)
        p.add_argument("--threads", type=int, default=1)
    f = sub.choices["fit"]
    f.add_argument("--teacher", type=Path, required=True)
    f.add_argument("--channels", type=int, nargs=4, default=[24, 48, 96, 192])
    f.add_argument("--students", nargs="+", default=["reverse", "forward"])
    f.add_argument("--epochs", type=int, default=None)
    f.add_argument("--lr", type=float, default=None)
    r = sub.choices["report"]
    r.add_argument("--every", type=int, default=0, help="test AUROC of every N-th kept epoch (0 = none)")
    r.add_argument("--out", type=Path)
    a = ap.parse_args()
    fit(a) if a.cmd == "fit" else report(a)


if __name__ == "__main__":
    main()
