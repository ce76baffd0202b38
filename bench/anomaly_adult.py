"""Adult normal-only screening: a detector fitted on the adult normals of the data pack.

Split: ``split_cases(labelled_cases(data), 0.2, seed 0)`` (the segmenters' split: grouped by
patient, stratified by source and label). The detector is fitted with ``anatomix anomaly fit``
on the TRAINING-split normals only (JSRT non-nodule, Montgomery and Shenzhen normals); it never
sees an abnormal film. It is scored with ``anatomix anomaly score --segment`` (masks of the
default segmenter) on:

- the validation-split normals of every source (unseen normals of the fit population: their
  flag rate at the stored threshold is the detector's false-positive rate away from its fit);
- every tuberculosis film of Montgomery and Shenzhen (train and validation split alike: none
  was used in fitting), against the Montgomery + Shenzhen validation normals;
- every JSRT nodule film, against the JSRT validation normals.

Usage:
    python bench/anomaly_adult.py --data ../shared/data --work runs/anomaly_adult \
        --out bench/results/anomaly_adult.md [--epochs 40 --critic-epochs 30 --method ae]
    python bench/anomaly_adult.py --method rd --model-config '{"teacher": "runs/teacher/teacher.pt"}' \
        --work runs/anomaly_adult_rd --out bench/results/anomaly_adult_rd.md   # the method's own defaults
    python bench/anomaly_adult.py --method zones --work runs/anomaly_adult_zones   # no training
    python bench/anomaly_adult.py --detector anatomix/weights/anomaly_adult.pt --work runs/x   # score as it is

The exact ``anatomix`` commands are printed in the results. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def run(cmd: list[str]) -> str:
    """Run an ``anatomix`` command (same interpreter), echo it, fail loudly."""
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return shlex.join(cmd)


def write_list(path: Path, cases) -> Path:
    path.write_text("".join(f"{c.image}\n" for c in cases))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--work", type=Path, default=Path("runs/anomaly_adult"))
    ap.add_argument("--method", default="ae")
    ap.add_argument("--epochs", type=int, default=None, help="default: the method's (ae 40)")
    ap.add_argument("--critic-epochs", type=int, default=None, help="default: the method's (ae 30)")
    ap.add_argument("--model-config", default=None, help="JSON passed to `anatomix anomaly fit --model-config`")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--detector", type=Path, default=None,
                    help="score this detector file instead of fitting one (e.g. an ensemble built from fitted ones)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from anatomix.anomaly.metrics import summary
    from anatomix.data.cases import labelled_cases, split_cases

    args.work.mkdir(parents=True, exist_ok=True)
    train, val = split_cases(labelled_cases(args.data))
    cases = train + val
    fit_normals = [c for c in train if c.meta.get("label") == "normal"]
    val_normals = [c for c in val if c.meta.get("label") == "normal"]
    tb = [c for c in cases if c.meta.get("label") == "tb"]
    nodules = [c for c in cases if c.meta.get("label") == "nodule"]
    detector = args.detector or args.work / f"adult_{args.method}.pt"
    anatomix = [str(Path(sys.executable).parent / "anatomix")]
    t0 = time.perf_counter()
    options = [f"--{k}={v}" for k, v in (("epochs", args.epochs), ("critic-epochs", args.critic_epochs),
                                         ("model-config", args.model_config)) if v is not None]
    commands = [] if args.detector else [
        run(anatomix + ["anomaly", "fit", str(write_list(args.work / "fit_normals.txt", fit_normals)),
                        "-o", str(detector), "--method", args.method, *options, "--segment",
                        "--threads", str(args.threads)])]
    fit_s = time.perf_counter() - t0
    scores = args.work / "scores.csv"
    evaluated = val_normals + tb + nodules
    commands.append(run(anatomix + ["anomaly", "score", str(write_list(args.work / "eval.txt", evaluated)),
                                    "--detector", str(detector), "-o", str(scores), "--segment",
                                    "--threads", str(args.threads)]))
    with open(scores, newline="") as f:
        rows = {r["image_id"]: r for r in csv.DictReader(f)}

    def task(positives, negatives, column):
        y = [1] * len(positives) + [0] * len(negatives)
        s = [float(rows[c.case_id][column]) for c in positives + negatives]
        return summary(y, s)

    adult_normals = [c for c in val_normals if c.source in ("montgomery", "shenzhen")]
    jsrt_normals = [c for c in val_normals if c.source == "jsrt"]
    from anatomix.anomaly.detector import Detector

    det = Detector.load(detector)
    fitted = (f"fit time {fit_s:.0f} s ({args.threads} thread(s), segmentation of the normals included)"
              if not args.detector else f"detector {detector} ({det!r}) scored as it is")
    lines = [f"# Adult normal-only screening ({det.method}, {det.image_size} px)\n",
             "Commands:\n", *[f"    {c}" for c in commands],
             f"\nFit on {len(fit_normals)} training-split normals "
             f"({', '.join(f'{s} {sum(c.source == s for c in fit_normals)}' for s in ('jsrt', 'montgomery', 'shenzhen'))}); "
             f"{fitted}.\n",
             "| task | positives | negatives | region | AUROC | AP | TPR at 5 % FPR |", "|---|---:|---:|---|---:|---:|---:|"]
    val_ids = {c.case_id for c in val}
    for name, pos, neg in (("tuberculosis (Montgomery + Shenzhen)", tb, adult_normals),
                           ("tuberculosis, validation-split films only", [c for c in tb if c.case_id in val_ids],
                            adult_normals),
                           *((f"tuberculosis, {s} only", [c for c in tb if c.source == s],
                              [c for c in adult_normals if c.source == s]) for s in ("montgomery", "shenzhen")),
                           ("JSRT nodules", nodules, jsrt_normals)):
        for column, region in (("score_image", "whole image"), ("score_lungs", "lungs"),
                               ("score_anatomy", "lungs + heart")):
            if any(rows[c.case_id][column] == "" for c in pos + neg):
                continue  # a region this detector does not score (zones: no lungs + heart)
            m = task(pos, neg, column)
            lines.append(f"| {name} | {len(pos)} | {len(neg)} | {region} | {m['auroc']:.3f} | {m['ap']:.3f} "
                         f"| {m['tpr@5%fpr']:.3f} |")
    flagged = [int(rows[c.case_id]["anomalous"]) for c in val_normals]
    per_source = ", ".join(f"{s} {np.mean([int(rows[c.case_id]['anomalous']) for c in val_normals if c.source == s]):.3f} "
                           f"of {sum(c.source == s for c in val_normals)}" for s in ("jsrt", "montgomery", "shenzhen"))
    lines.append(f"\nStored threshold on the {len(val_normals)} validation-split normals (unseen normals of the fit "
                 f"population, all sources): flag rate {sum(flagged) / len(flagged):.3f} (target 0.05); per source: "
                 f"{per_source}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
