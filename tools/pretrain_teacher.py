"""Pretrain the distillation detectors' feature teacher on the data pack's NORMAL radiographs.

Self-supervised (masked in-painting + denoising, :mod:`anatomix.anomaly.teacher`), normals only:

- ZhangLab pediatric ``split_upstream=train`` normals, minus the selection and calibration
  hold-outs that the pediatric protocol keeps for the detector (:func:`anatomix.anomaly.train.split_fit`
  over the manifest order, seed 0), so those stay unseen by teacher and students alike;
- adult normals of the segmenters' TRAINING split (``split_cases(labelled_cases(data), 0.2, seed 0)``):
  JSRT non-nodule, Montgomery and Shenzhen normals. The validation-split normals stay unseen.

Resumable: rerun the same command and it continues from ``WORK/teacher.ckpt``. Writes
``WORK/teacher.pt`` (:func:`anatomix.anomaly.teacher.save_teacher`) and ``WORK/teacher.json``.
Not run by users; the recipe::

    OMP_NUM_THREADS=1 python tools/pretrain_teacher.py --data ../shared/data --work runs/teacher
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def normal_images(data: Path, size: int) -> tuple[np.ndarray, dict[str, int]]:
    """The teacher's training films in the model frame ``(N, S, S)`` and their count per source."""
    from anatomix.anomaly.detector import preprocess
    from anatomix.anomaly.train import split_fit
    from anatomix.data.anomaly_pack import anomaly_cases, model_frame_images
    from anatomix.data.cases import labelled_cases, split_cases
    from anatomix.io import read_radiograph

    ped = anomaly_cases(data, source="zhanglab", split="train", label="normal")
    ped_train = split_fit(len(ped))[0]
    x_ped = model_frame_images([ped[i] for i in ped_train], size)
    adult = [c for c in split_cases(labelled_cases(data))[0] if c.meta.get("label") == "normal"]
    x_adult = np.stack([preprocess(read_radiograph(c.image).pixels, size)[0] for c in adult])
    counts = {"zhanglab": len(ped_train), **{s: sum(c.source == s for c in adult)
                                             for s in ("jsrt", "montgomery", "shenzhen")}}
    return np.concatenate([x_ped, x_adult]).astype(np.float32), counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--work", type=Path, default=Path("runs/teacher"))
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--channels", type=int, nargs=4, default=[24, 48, 96, 192])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    import torch

    from anatomix.anomaly.teacher import pretrain_teacher, save_teacher

    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    cache = a.work / f"normals_{a.image_size}.npz"
    if cache.is_file():
        d = np.load(cache)
        x, counts = d["x"], json.loads(str(d["counts"]))
    else:
        x, counts = normal_images(a.data, a.image_size)
        np.savez(cache, x=x, counts=json.dumps(counts))
    print(f"{len(x)} normal films: {counts}", flush=True)
    t0 = time.time()
    enc, hist = pretrain_teacher(x, a.image_size, a.channels, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                                 seed=a.seed, checkpoint=a.work / "teacher.ckpt", progress=False,
                                 log=lambda s: print(s, flush=True))
    meta = {"command": " ".join(shlex.quote(v) for v in ["python", *sys.argv]), "counts": counts,
            "image_size": a.image_size, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr, "seed": a.seed,
            "pretext": "masked in-painting + denoising (anatomix.anomaly.teacher.InpaintingPretext)",
            "train_seconds": float(sum(h["seconds"] for h in hist)), "final_loss": hist[-1]["loss"]}
    save_teacher(a.work / "teacher.pt", enc, meta)
    (a.work / "teacher.json").write_text(json.dumps({**meta, "history": hist}, indent=1))
    print(f"teacher written: {a.work / 'teacher.pt'} ({time.time() - t0:.0f} s this run)")


if __name__ == "__main__":
    main()
