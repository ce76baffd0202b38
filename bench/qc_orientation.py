"""Does the rotation check pass upright films of every kind, and catch rotated ones?

``orientation_gain`` (:func:`anatomix.qc.orientation.orientation_gain`): best global NCC of a
90/180/270-degree rotation of the film with any bundled atlas, minus that of the film itself.
Two ways of bringing the film into the 128-px registration frame are compared:

- ``whole film``: the whole image padded to a square (the rule before);
- ``exposed field``: the film cropped to its exposed field first
  (:func:`anatomix.data.preprocess.exposed_field`: black or white border bands and burnt-in
  labels in them removed), as the segmenters see it.

The margin (``Thresholds.orientation_gain_max``) is chosen on TRAINING films only: the largest
upright gain over the training split of JSRT, Montgomery and Shenzhen and the ZhangLab pediatric
normals of the upstream training split (``--train-per-source`` films of each). It is then
measured on films it never saw: our validation split of the three collections, the ZhangLab
upstream test split (normal and pneumonia, children 1-5 years, AP), and the external films
(NIH, TBX11K, Shenzhen), each upright and rotated by 90, 180 and 270 degrees.

Usage::

    OMP_NUM_THREADS=1 python bench/qc_orientation.py --data ../shared/data --out bench/results/qc_orientation.md
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def gains(paths, crop: bool) -> np.ndarray:
    """(n, 4) orientation gains of each film as it is and rotated by 90, 180, 270 degrees."""
    from anatomix.data.preprocess import to_model_frame
    from anatomix.io import read_radiograph
    from anatomix.qc.orientation import orientation_gain
    from anatomix.qc.rca import load_references

    refs = load_references(None)
    out = []
    for p in paths:
        px = read_radiograph(p).pixels
        row = []
        for n in range(4):
            img, _ = to_model_frame(np.ascontiguousarray(np.rot90(px, n)), refs.size, crop_borders=crop)
            row.append(orientation_gain(img, refs))
        out.append(row)
    return np.array(out)


def film_sets(data: Path, per_source: int):
    """({name: paths} of training films, {name: paths} of held-out films)."""
    from anatomix.data.cases import labelled_cases, split_cases

    train, val = split_cases(labelled_cases(data))
    rows = list(csv.DictReader(open(data / "cxr-anomaly" / "manifest.csv", encoding="utf-8")))

    def anomaly(pred):
        return [data / "cxr-anomaly" / ("zhanglab" if r["source"] == "zhanglab" else "external") / f"{r['id']}.png"
                for r in rows if pred(r)]

    def spread(paths, n):
        return paths[:: max(1, len(paths) // n)][:n] if n else paths

    fit = {s: spread([c.image for c in train if c.source == s], per_source) for s in ("jsrt", "montgomery", "shenzhen")}
    fit["zhanglab train normals"] = spread(anomaly(lambda r: r["source"] == "zhanglab" and r["split_upstream"] == "train"
                                                   and r["label"] == "normal"), per_source)
    held = {s: [c.image for c in val if c.source == s] for s in ("jsrt", "montgomery", "shenzhen")}
    held["zhanglab test (AP, 1-5 y)"] = anomaly(lambda r: r["source"] == "zhanglab" and r["split_upstream"] == "test")
    held["external (NIH, TBX11K, Shenzhen)"] = anomaly(lambda r: r["source"] != "zhanglab")
    return fit, held


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--train-per-source", type=int, default=100)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    fit, held = film_sets(args.data, args.train_per_source)
    lines = ["# Rotation check on upright and rotated films", "",
             f"`{' '.join(['python', 'bench/qc_orientation.py'] + (argv if argv is not None else sys.argv[1:]))}`", ""]
    for crop in (False, True):
        label = "exposed field" if crop else "whole film"
        g_fit = np.concatenate([gains(p, crop)[:, 0] for p in fit.values()])
        margin = float(max(0.0, g_fit.max()))
        lines += [f"## {label}", "",
                  f"Margin = largest upright gain over {len(g_fit)} training films = **{margin:.3f}** "
                  "(a film is flagged `rotated` when its gain exceeds it).", "",
                  "| held-out films | n | upright passed | upright passed at margin 0 | rotated caught (90/180/270) |",
                  "|---|---|---|---|---|"]
        for name, paths in held.items():
            g = gains(paths, crop)
            caught = [(g[:, n] > margin).mean() for n in (1, 2, 3)]
            lines.append(f"| {name} | {len(g)} | {100 * (g[:, 0] <= margin).mean():.1f} % | "
                         f"{100 * (g[:, 0] <= 0).mean():.1f} % | "
                         + " / ".join(f"{100 * c:.1f} %" for c in caught) + " |")
        lines.append("")
    lines.append(f"Wall time {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
