"""Validate RCA: how well does ``Dice RCA`` predict the true Dice of a mask?

On the validation split (``split_cases(pack_cases(data), 0.2, 0)[1]``; atlases and shape model
are built from the training split only), every case gets masks of deliberately varied quality:

- ``gt``: the ground truth itself;
- perturbations of the ground-truth contours: ``shift``, ``scale``, ``rotate``, ``jitter``
  (smooth random displacement of the nodes), ``erode`` / ``dilate`` (morphology on the masks),
  ``heart_shift`` (heart only), ``lung_cut`` (a lung's lower part removed), ``other_patient``
  (another validation patient's ground truth: plausible but wrong), magnitudes drawn at random;
- optional model predictions (``--checkpoint``: registry names or checkpoints, loaded with
  :func:`anatomix.models.load_segmenter`; ``--weight-noise`` adds
  degraded copies of each, Gaussian noise of that relative size on every weight, as stand-ins for
  under-trained checkpoints).

For each mask: the true Dice (mean over lungR, lungL, heart against the ground truth) and RCA's
``Dice RCA (Max)`` / ``(Mean)``. Prints Pearson r, Spearman rho and MAE of each estimate against the
true Dice, overall and per source, and writes ``bench/results/qc_rca_validation.{md,csv,png}``.

Usage::

    nice -n 10 .venv/bin/python bench/rca_validation.py --data ../shared/data \
        [--checkpoint anatomix/weights/hybridgnet_lungs_heart.pt --weight-noise 0.05 0.1 0.2] \
        [--references atlases|train] [--k 4] [--per-case 8]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np

from anatomix.anatomy import STRUCTURE_KEYS
from anatomix.qc.quality import estimate_agreement, mean_dice

ROOT = Path(__file__).resolve().parents[1]


def load_case(case):
    """(image, {structure: ground-truth mask}, (120, 2) landmarks) of a labelled case."""
    from anatomix.io.read import read_mask, read_radiograph

    px = read_radiograph(case.image).pixels
    gt = {k: read_mask(case.masks[k]) for k in STRUCTURE_KEYS}
    lm = np.load(case.landmarks)[:120].astype(np.float64)
    return px, gt, lm


def _smooth_noise(n: int, amp: float, rng) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    out = np.zeros((n, 2))
    for f in (1, 2, 3):
        for d in range(2):
            out[:, d] += rng.normal(0, amp / f) * np.sin(f * t + rng.uniform(0, 2 * np.pi))
    return out


PERTURBATIONS = ("shift", "scale", "rotate", "jitter", "erode", "dilate", "heart_shift", "lung_cut", "other_patient")


def perturb(kind: str, gt, lm, shape, rng, other=None):
    """A perturbed copy of the ground truth: (masks, landmarks or None, magnitude)."""
    from scipy import ndimage

    from anatomix.anatomy import LUNGS_HEART, landmarks_to_masks

    c = lm.mean(0)
    if kind == "shift":
        mag = rng.uniform(3, 45)
        a = rng.uniform(0, 2 * np.pi)
        new = lm + mag * np.array([np.cos(a), np.sin(a)])
    elif kind == "scale":
        mag = rng.uniform(0.7, 1.3)
        new = c + (lm - c) * mag
    elif kind == "rotate":
        mag = rng.uniform(-25, 25)
        t = np.radians(mag)
        new = c + (lm - c) @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    elif kind == "jitter":
        mag = rng.uniform(2, 25)
        new = lm.copy()
        for sl in LUNGS_HEART.slices().values():
            new[sl] += _smooth_noise(sl.stop - sl.start, mag, rng)
    elif kind == "heart_shift":
        mag = rng.uniform(10, 70)
        a = rng.uniform(0, 2 * np.pi)
        new = lm.copy()
        new[94:120] += mag * np.array([np.cos(a), np.sin(a)])
    elif kind in ("erode", "dilate"):
        mag = int(rng.integers(2, 25))
        op = ndimage.binary_erosion if kind == "erode" else ndimage.binary_dilation
        return {k: op(m, iterations=mag) for k, m in gt.items()}, None, float(mag)
    elif kind == "lung_cut":
        key = "lungR" if rng.random() < 0.5 else "lungL"
        mag = rng.uniform(0.2, 0.7)
        ys = np.flatnonzero(gt[key].any(axis=1))
        cut = int(ys[-1] - mag * (ys[-1] - ys[0]))
        m = gt[key].copy()
        m[cut:] = False
        return dict(gt, **{key: m}), None, float(mag)
    elif kind == "other_patient":
        return other[0], other[1], 0.0
    else:
        raise ValueError(kind)
    return landmarks_to_masks(new, shape, LUNGS_HEART), new, float(mag)


def degraded_segmenters(checkpoints, noise_levels):
    """[(name, segmenter)]: every checkpoint (named by its file stem), plus weight-noise copies of
    the last one."""
    import torch

    from anatomix.models import load_segmenter

    out = [(Path(c).stem, load_segmenter(str(c))) for c in checkpoints]
    checkpoint = checkpoints[-1]
    for s in noise_levels:
        seg = load_segmenter(str(checkpoint))
        g = torch.Generator().manual_seed(int(s * 1000))
        with torch.no_grad():
            for p in seg.model.parameters():
                if p.numel() > 1:
                    p.add_(torch.randn(p.shape, generator=g) * float(s) * p.std())
        out.append((f"{Path(checkpoint).stem}+noise{s:g}", seg))
    return out


def main(argv=None) -> None:
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    from anatomix.data.cases import pack_cases, split_cases
    from anatomix.io.record import Radiograph
    from anatomix.qc.rca import load_references, rca, references_from_cases

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--checkpoint", nargs="*", default=[], help="graph checkpoints (e.g. under-trained snapshots)")
    ap.add_argument("--weight-noise", type=float, nargs="*", default=[])
    ap.add_argument("--references", default="atlases", help="atlases | train | <folder or .npz>")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--per-case", type=int, default=8, help="perturbed masks per validation case")
    ap.add_argument("--limit", type=int, default=None, help="first N validation cases")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "qc_rca_validation"))
    ap.add_argument("--merge", nargs="*", default=[], help="earlier CSVs of this script to pool into the figures")
    args = ap.parse_args(argv)

    train, val = split_cases(pack_cases(args.data), 0.2, 0)
    val = [c for c in val if c.landmarks is not None][: args.limit]
    if not args.per_case and not args.checkpoint:
        val = []  # only pooling earlier runs (--merge)
    if args.references == "atlases":
        refs = load_references(None)
    elif args.references == "train":  # the training cases themselves (real images), for comparison
        refs = references_from_cases(train, source="training cases")
    else:
        refs = load_references(args.references)
    models = degraded_segmenters(args.checkpoint, args.weight_noise) if args.checkpoint else []
    rng = np.random.default_rng(0)
    loaded = {c.case_id: load_case(c) for c in val}
    rows: List[Dict[str, object]] = []
    times = []
    for i, c in enumerate(val):
        px, gt, lm = loaded[c.case_id]
        variants = [("gt", gt, 0.0)] if args.per_case else []
        other = val[(i + 1) % len(val)]
        for j in range(args.per_case):
            kind = PERTURBATIONS[(i + j) % len(PERTURBATIONS)]
            m, _, mag = perturb(kind, gt, lm, px.shape, rng, other=loaded[other.case_id][1:])
            variants.append((kind, m, mag))
        for name, seg in models:
            pred = seg.predict([Radiograph(px, c.image)])[0]
            variants.append((name, pred.masks, 0.0))
        for kind, m, mag in variants:
            t = time.process_time()
            r = rca(px, m, refs, k=args.k)
            times.append(time.process_time() - t)
            rows.append({"case": c.case_id, "source": kind, "magnitude": round(mag, 3),
                         "true_dice": mean_dice(m, gt), "rca_max": r["Dice RCA (Max)"],
                         "rca_mean": r["Dice RCA (Mean)"], "similarity": r["rca_similarity"]})
        print(f"{i + 1}/{len(val)} {c.case_id}", file=sys.stderr)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.references == "atlases" else f"_{Path(args.references).name}"
    if rows:
        with open(f"{out}{suffix}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    for extra in args.merge:
        with open(extra, newline="") as f:
            rows += [{k: (v if k in ("case", "source") else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
    td = np.array([r["true_dice"] for r in rows])
    n_cases = len({r["case"] for r in rows})
    lines = [f"# RCA validation ({args.references} references, k={args.k})", "",
             f"Validation cases: {n_cases} (JSRT/SCR, `split_cases(..., 0.2, 0)` validation part); "
             f"masks: {len(rows)} (pooled from {len(args.merge) + (1 if val else 0)} run(s)); references: {len(refs)} ({refs.meta.get('kind', refs.meta.get('source', ''))}).",
             f"True Dice range {td.min():.3f}-{td.max():.3f}, median {np.median(td):.3f}.",
             (f"RCA cost: {np.mean(times):.2f} s CPU per image (median {np.median(times):.2f}, one thread, "
              f"registration at 128 px)." if times else "RCA cost: see the runs pooled."), "",
             "| masks | n | true Dice median | estimate | Pearson r | Spearman rho | MAE | bias (est - true) |",
             "|---|---|---|---|---|---|---|---|"]
    sources = list(dict.fromkeys(r["source"] for r in rows))
    groups = [("all", rows),
              ("all with true Dice >= 0.5", [r for r in rows if r["true_dice"] >= 0.5]),
              ("perturbed ground truth (all kinds)", [r for r in rows if r["source"] in PERTURBATIONS]),
              ("model predictions (all checkpoints)",
               [r for r in rows if r["source"] not in PERTURBATIONS and r["source"] != "gt"])]
    groups += [(s, [r for r in rows if r["source"] == s]) for s in sources]
    for gname, grows in groups:
        if len(grows) < 3:
            continue
        t = np.array([r["true_dice"] for r in grows])
        for est in ("rca_max", "rca_mean"):
            s = estimate_agreement(np.array([r[est] for r in grows]), t)
            label = "Dice RCA (Max)" if est == "rca_max" else "Dice RCA (Mean)"
            lines.append(f"| {gname} | {s['n']} | {np.median(t):.3f} | {label} | {s['pearson']:.3f} | {s['spearman']:.3f} | "
                         f"{s['mae']:.3f} | {s['bias']:+.3f} |")
    lines += ["", "Sources: `gt` = the ground truth; `shift` ... `other_patient` = perturbed ground truth "
              "(see the script's docstring); any other name = predictions of a graph checkpoint (file stem), "
              "`+noiseX` = that checkpoint with Gaussian noise of X times each weight tensor's std added "
              "(a degraded stand-in for an under-trained model). Pearson r over a pool that holds a cluster "
              "of failed masks (true Dice < 0.3) is inflated by it: read the `true Dice >= 0.5` rows for "
              "the figure that matters when telling good masks from mediocre ones."]
    # agreement of the 0.7 cut
    rm = np.array([r["rca_mean"] for r in rows])
    lines += ["", "Agreement of the CheXmask cut at 0.7 (Dice RCA (Mean) >= 0.7 vs true Dice >= 0.7): "
              f"{np.mean((rm >= 0.7) == (td >= 0.7)):.3f}; of true-bad masks (true < 0.7) flagged: "
              f"{np.mean(rm[td < 0.7] < 0.7) if (td < 0.7).any() else float('nan'):.3f} "
              f"(n={int((td < 0.7).sum())}); of true-good masks (true >= 0.8) passed: "
              f"{np.mean(rm[td >= 0.8] >= 0.7):.3f} (n={int((td >= 0.8).sum())}).", "",
              "Command: `" + " ".join(["python bench/rca_validation.py"] + (argv or sys.argv[1:])) + "`"]
    text = "\n".join(lines) + "\n"
    Path(f"{out}{suffix}.md").write_text(text)
    print(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
        for ax, est, label in zip(axes, ("rca_max", "rca_mean"), ("Dice RCA (Max)", "Dice RCA (Mean)")):
            srcs = list(dict.fromkeys(r["source"] for r in rows))
            for s in srcs:
                sel = [r for r in rows if r["source"] == s]
                ax.scatter([r["true_dice"] for r in sel], [r[est] for r in sel], s=10, label=s, alpha=0.7)
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
            st = estimate_agreement(np.array([r[est] for r in rows]), td)
            ax.set_title(f"{label}: r={st['pearson']:.3f}, MAE={st['mae']:.3f}")
            ax.set_xlabel("true Dice")
            ax.set_ylabel(label)
            ax.set_xlim(0, 1.02)
            ax.set_ylim(0, 1.02)
        axes[1].legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(f"{out}{suffix}.png", dpi=90)
    except Exception as e:  # the figure is a bonus; the tables above are the result
        print(f"no figure: {type(e).__name__}: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
