"""Predicted Dice on masks of known quality, leave one collection out, and what each signal buys.

Reads the calibration table written by ``tools/build_qc_dice_model.py --table`` (masks of known
quality on our validation split of JSRT, Montgomery and Shenzhen: the bundled, JSRT-only and
weight-noise-degraded models on clean and degraded films, and perturbed truth; per-structure
signals against two second opinions; see :mod:`anatomix.qc.calibration`) and prints:

1. the masks: per collection and origin, how many, their median true Dice, failed (< 0.8), good
   (>= 0.93);
2. Pearson r of each signal with the true Dice of its structure, per collection;
3. leave one collection out (model AND threshold fitted on the other two collections, per
   structure; threshold, rates and r over mask sets) for the bundled recipe (all signals and
   their products with ``agree_pair``, :data:`anatomix.qc.signals.FEATURES`) and for subsets, per held-out collection, by second opinion and mask origin;
4. per-structure r on the held-out collection (the heart is labelled on JSRT only, so with JSRT
   held out, the heart's predictions come from a model that never saw a heart row).

Usage::

    OMP_NUM_THREADS=1 python bench/qc_quality.py --table bench/results/qc_calibration.csv.gz \\
        --out bench/results/qc_quality.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

VARIANTS = {
    "all signals and their products with agree_pair (bundled recipe)": None,
    "all signals, no products (the recipe before)": ("agree", "agree_pair", "node_std", "extra_components",
                                                     "holes", "area_log", "rca"),
    "without RCA": ("agree", "agree_pair", "node_std", "extra_components", "holes", "area_log"),
    "agreement only": ("agree", "agree_pair"),
    "RCA only": ("rca",),
    "RCA + plausibility (no second opinion)": ("rca", "extra_components", "holes", "area_log"),
}


def masks_table(rows) -> list:
    from anatomix.qc.calibration import origin, table_arrays
    from anatomix.qc.quality import FAILED_BELOW, GOOD_FROM, mask_means

    # one opinion's rows are enough: the masks are the same under both
    rows = [r for r in rows if r["opinion"] == rows[0]["opinion"]]
    _, y, groups, _, ids = table_arrays(rows)
    colls = sorted(set(groups.tolist()))
    lines = ["| origin | " + " | ".join(colls) + " |", "|---|" + "---|" * len(colls)]
    orig = np.array([origin(r) for r in rows])
    for o in sorted(set(orig.tolist())):
        cells = []
        for c in colls:
            s = (orig == o) & (groups == c)
            _, d = mask_means(y[s], ids[s])
            cells.append(f"{len(d)} masks, median {np.median(d):.3f}, {(d < FAILED_BELOW).sum()} failed, "
                         f"{(d >= GOOD_FROM).sum()} good" if len(d) else "-")
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    return lines


def signal_table(rows) -> list:
    from anatomix.qc.calibration import table_arrays
    from anatomix.qc.quality import pearson
    from anatomix.qc.signals import SIGNALS

    x, y, groups, _, _ = table_arrays(rows)
    colls = sorted(set(groups.tolist()))
    lines = ["| signal | " + " | ".join(colls) + " |", "|---|" + "---|" * len(colls)]
    for j, name in enumerate(SIGNALS):
        cells = []
        for c in colls:
            s = (groups == c) & np.isfinite(x[:, j])
            r = pearson(x[s, j], y[s])
            cells.append("-" if not np.isfinite(r) else f"{r:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def structure_table(rows) -> list:
    from anatomix.qc.calibration import table_arrays
    from anatomix.qc.quality import loco_evaluate, pearson

    x, y, groups, hard, _ = table_arrays(rows)
    structure = np.array([r["structure"] for r in rows])
    lines = ["| held out | structure | rows | Pearson r | mean abs error |", "|---|---|---|---|---|"]
    for res in loco_evaluate(x, y, groups, hard_fail=hard):  # rows as their own mask sets
        te = groups == res.held_out
        for key in sorted(set(structure[te].tolist())):
            s = structure[te] == key
            err = np.abs(res.pred[s] - y[te][s]).mean()
            lines.append(f"| {res.held_out} | {key} | {s.sum()} | {pearson(res.pred[s], y[te][s]):.3f} | {err:.3f} |")
    return lines


def main(argv=None) -> None:
    from anatomix.qc.calibration import loco_markdown, read_rows
    from anatomix.qc.signals import FEATURES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", type=Path, required=True, help="table of tools/build_qc_dice_model.py --table")
    ap.add_argument("--out", type=Path, help="write the markdown here too")
    args = ap.parse_args(argv)
    rows = read_rows(args.table)
    parts = ["# Predicted Dice on masks of known quality, leave one collection out", "",
             f"`{' '.join(['python', 'bench/qc_quality.py'] + (argv if argv is not None else sys.argv[1:]))}` "
             f"({len(rows)} structure rows)", "",
             "## Masks of known quality (validation split; one row per mask set and film)", "",
             *masks_table(rows), "", "## Pearson r of each signal with its structure's true Dice", "",
             *signal_table(rows), ""]
    for label, names in VARIANTS.items():
        parts += [f"## Leave one collection out: {label}", "", loco_markdown(rows, names or FEATURES), ""]
    parts += ["## Per structure (bundled recipe; rows, leave one collection out)", "", *structure_table(rows), ""]
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
