"""Segmenters per source, under site-like corruptions, and on pediatric films.

On the validation split that ``anatomix train`` holds out from every labelled pack source
(``split_cases(labelled_cases(data), 0.2, seed 0)[1]``: JSRT, Montgomery, Shenzhen; grouped by
patient, stratified by source and label), for each model: Dice per structure, HD95 (px in the
original 512 frame; mm for JSRT, 0.7 mm/px — the Montgomery/Shenzhen pack images were squashed
to 512 upstream, so their mm are unknown), and topological errors (a mask that is not one
component without holes, or a self-intersecting contour), on

- ``clean``: the images as they are;
- ``border``: a black band of 30 % of the height under the film and 10 % of the width on its
  left (masks padded alike), as on Montgomery films;
- ``tilt``: rotated by 10 degrees about the centre (masks alike);
- ``invert``: inverted contrast;
- ``noise``: Gaussian noise of sd 0.1 (of the [0, 1] range).

Pediatric (ZhangLab, no truth): topological errors and the hard plausibility failures (sides
swapped, heart outside the thorax) over ``--pediatric`` images. ``--worst`` draws the ten worst
clean validation cases (lowest mean Dice) of the first model as overlays (prediction in colour, truth in white).

Usage:
    python bench/segmentation_sources.py --data ../shared/data \
        --model graph=anatomix/weights/hybridgnet_lungs_heart.pt --model pixel=... \
        --model refined=... --pediatric 200 --worst bench/results/segmentation_worst.png \
        --out bench/results/segmentation_sources.md

Models are registry names or checkpoint paths (``name=path``). ``--speed N`` times ``predict``
on N validation images per model in the same process (ratios to the first model). Prints
markdown tables; ``--cases rows.csv`` also keeps every per-case, per-structure figure.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np

VARIANTS = ("clean", "border", "tilt", "invert", "noise")
JSRT_MM_PER_PX = 0.7


def corrupt(pixels: np.ndarray, masks: Dict[str, np.ndarray], variant: str, seed: int):
    """(pixels, masks) of one robustness variant (see the module docstring)."""
    from scipy import ndimage

    if variant == "clean":
        return pixels, masks
    if variant == "border":
        h, w = pixels.shape
        pad = ((0, int(0.3 * h)), (int(0.1 * w), 0))
        return np.pad(pixels, pad), {k: np.pad(m, pad) for k, m in masks.items()}
    if variant == "tilt":
        rot = lambda a, order: ndimage.rotate(a, 10.0, reshape=False, order=order, mode="constant")  # noqa: E731
        return np.clip(rot(pixels, 1), 0, 1), {k: rot(m.astype(np.uint8), 0).astype(bool) for k, m in masks.items()}
    if variant == "invert":
        return 1.0 - pixels, masks
    if variant == "noise":
        noise = np.random.default_rng(seed).normal(0.0, 0.1, pixels.shape)
        return np.clip(pixels + noise, 0, 1).astype(np.float32), masks
    raise ValueError(variant)


def evaluate(models, cases, variants) -> List[dict]:
    """One row per (model, variant, case, structure)."""
    from anatomix.evaluation import mask_metrics, topology_errors
    from anatomix.io import read_mask, read_radiograph
    from anatomix.io.record import Radiograph

    rows = []
    for i, case in enumerate(cases):
        original = read_radiograph(case.image)
        truth0 = {k: read_mask(p) for k, p in case.masks.items()}
        for variant in variants:
            pixels, truth = corrupt(original.pixels, truth0, variant, seed=i)
            r = Radiograph(pixels.astype(np.float32), path=original.path)
            for name, seg_model in models.items():
                seg = seg_model.predict([r])[0]
                topo = topology_errors(seg)
                for k, t in truth.items():
                    if k not in seg.masks:
                        continue
                    spacing = JSRT_MM_PER_PX if case.source == "jsrt" else None
                    rows.append({"model": name, "variant": variant, "source": case.source, "case": case.case_id,
                                 "structure": k, **mask_metrics(seg.masks[k], t, spacing), "topology": topo[k]})
    return rows


def table(rows: List[dict], variant: str) -> str:
    """Markdown: model x source, Dice per structure, HD95, topological errors."""
    out = ["| model | source | n | Dice lungR | Dice lungL | Dice heart | lungs Dice min | HD95 px lungs / heart "
           "| HD95 mm lungs / heart | topological errors |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    groups = defaultdict(list)
    for r in rows:
        if r["variant"] == variant:
            groups[(r["model"], r["source"])].append(r)
    for (model, source), sel in groups.items():
        by = defaultdict(list)
        for r in sel:
            by[r["structure"]].append(r)
        mean = lambda k, f: np.nanmean([r[f] for r in by[k]]) if by[k] else np.nan  # noqa: E731
        lungs = by["lungR"] + by["lungL"]
        fmt = lambda v, d=4: "–" if not np.isfinite(v) else f"{v:.{d}f}"  # noqa: E731
        hd_l = np.nanmean([r["hd95_px"] for r in lungs])
        mm_l = np.nanmean([r["hd95_mm"] for r in lungs]) if source == "jsrt" else np.nan
        out.append(f"| {model} | {source} | {len(by['lungR'])} | {fmt(mean('lungR', 'dice'))} | {fmt(mean('lungL', 'dice'))} "
                   f"| {fmt(mean('heart', 'dice'))} | {fmt(min(r['dice'] for r in lungs))} "
                   f"| {fmt(hd_l, 1)} / {fmt(mean('heart', 'hd95_px'), 1)} | {fmt(mm_l, 2)} / "
                   f"{fmt(mean('heart', 'hd95_mm'), 2)} | {sum(r['topology'] for r in sel)} of {len(sel)} |")
    return "\n".join(out)


def hd95_spread(rows: List[dict], variant: str = "clean") -> str:
    """Markdown: how the lungs' HD95 (px) spreads over cases, per model and source: a mean can
    be carried by a few cases, so the median, 90th percentile and worst case stand beside it."""
    out = ["| model | source | lungs (cases x 2) | HD95 px mean | median | 90th percentile | worst (case) |",
           "|---|---|---:|---:|---:|---:|---|"]
    groups = defaultdict(list)
    for r in rows:
        if r["variant"] == variant and r["structure"] in ("lungR", "lungL") and np.isfinite(r["hd95_px"]):
            groups[(r["model"], r["source"])].append(r)
    for (model, source), sel in groups.items():
        hd = np.array([r["hd95_px"] for r in sel])
        worst = sel[int(np.argmax(hd))]
        out.append(f"| {model} | {source} | {len(sel)} | {hd.mean():.1f} | {np.median(hd):.1f} "
                   f"| {np.percentile(hd, 90):.1f} | {hd.max():.1f} ({worst['case']} {worst['structure']}) |")
    return "\n".join(out)


def write_cases(rows: List[dict], path: Path) -> None:
    """Every (model, variant, case, structure) row as a CSV, written atomically."""
    from anatomix.io.tables import write_table

    header = ["model", "variant", "source", "case", "structure", "dice", "hd95_px", "hd95_mm", "topology"]
    write_table(path, header, ([r[k] for k in header] for r in rows))


def pediatric(models, data: Path, n: int) -> str:
    """Topology and hard plausibility failures on ``n`` ZhangLab images (no truth)."""
    import csv

    from anatomix.evaluation import topology_errors
    from anatomix.io import read_radiograph
    from anatomix.qc.plausibility import plausibility

    folder = data / "cxr-anomaly"
    with open(folder / "manifest.csv", newline="") as f:
        ids = [(r["source"], r["id"]) for r in csv.DictReader(f) if r["source"] == "zhanglab"]
    ids = ids[:: max(1, len(ids) // n)][:n]
    out = ["| model | images | topological errors (structures) | images with any | sides swapped | heart outside thorax |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, model in models.items():
        topo = any_topo = swapped = outside = 0
        for source, cid in ids:
            seg = model.predict([read_radiograph(folder / source / f"{cid}.png")])[0]
            t = topology_errors(seg)
            p = plausibility(seg.masks, seg.landmarks, seg.template)
            topo += sum(t.values())
            any_topo += any(t.values())
            swapped += not p["lr_order_ok"]
            outside += not p["heart_inside_thorax"]
        out.append(f"| {name} | {len(ids)} | {topo} | {any_topo} | {swapped} | {outside} |")
    return "\n".join(out)


def worst_picture(rows, model: str, cases, models, path: Path, k: int = 10) -> str:
    """Overlays of the ``k`` clean validation cases with the lowest mean Dice of ``model``."""
    import tempfile

    from PIL import Image

    from anatomix.io import read_mask, read_radiograph
    from anatomix.io.write import write_overlay

    per = defaultdict(list)
    for r in rows:
        if r["model"] == model and r["variant"] == "clean":
            per[r["case"]].append(r["dice"])
    worst = sorted(per, key=lambda c: np.mean(per[c]))[:k]
    by_id = {c.case_id: c for c in cases}
    tiles, lines = [], []
    for cid in worst:
        case = by_id[cid]
        rad = read_radiograph(case.image)
        seg = models[model].predict([rad])[0]
        truth = np.zeros(rad.shape, bool)
        for p in case.masks.values():
            truth |= read_mask(p)
        with tempfile.TemporaryDirectory() as tmp:
            write_overlay(Path(tmp) / "o.png", rad.pixels, seg.template.split(seg.landmarks), {"truth": truth}, 256)
            tiles.append(np.asarray(Image.open(Path(tmp) / "o.png").convert("RGB").resize((256, 256))))
        lines.append(f"- {cid} ({case.source}): mean Dice {np.mean(per[cid]):.3f}")
    rows_img = [np.concatenate(tiles[i:i + 5], axis=1) for i in range(0, len(tiles), 5)]
    if len(rows_img) > 1 and rows_img[-1].shape != rows_img[0].shape:
        rows_img[-1] = np.pad(rows_img[-1], ((0, 0), (0, rows_img[0].shape[1] - rows_img[-1].shape[1]), (0, 0)))
    Image.fromarray(np.concatenate(rows_img, axis=0)).save(path)
    return "\n".join(lines)


def speed(models, cases, n: int, repeats: int = 3) -> str:
    """Images/s of ``predict`` (one image per call, masks included) per model, same process:
    median of ``repeats`` passes over ``n`` images already read; ratio to the first model."""
    from anatomix.io import read_radiograph

    images = [read_radiograph(c.image) for c in cases[:n]]
    rates = {}
    for name, model in models.items():
        model.predict(images[:1])  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for r in images:
                model.predict([r])
            times.append(time.perf_counter() - t0)
        rates[name] = len(images) / float(np.median(times))
    first = next(iter(rates.values()))
    lines = ["| model | images/s (1 thread) | time vs first |", "|---|---:|---:|"]
    lines += [f"| {name} | {rate:.1f} | {first / rate:.2f}x |" for name, rate in rates.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", action="append", required=True, help="name=registry-name-or-checkpoint")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--pediatric", type=int, default=0)
    ap.add_argument("--worst", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="at most this many cases per source (0: all)")
    ap.add_argument("--speed", type=int, default=0, help="time predict on this many validation images")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--cases", type=Path, help="also write every per-case, per-structure row to this CSV")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from anatomix.data.cases import labelled_cases, split_cases
    from anatomix.models import load_segmenter

    models = {m.split("=", 1)[0]: load_segmenter(m.split("=", 1)[1]) for m in args.model}
    val = split_cases(labelled_cases(args.data))[1]
    if args.limit:
        per = defaultdict(list)
        for c in val:
            per[c.source].append(c)
        val = [c for cs in per.values() for c in cs[: args.limit]]
    t0 = time.perf_counter()
    rows = evaluate(models, val, args.variants.split(","))
    parts = [f"# Segmenters per source (validation split, {len(val)} cases)\n",
             f"Command: `python bench/segmentation_sources.py {' '.join(__import__('sys').argv[1:])}`\n"]
    for variant in args.variants.split(","):
        parts += [f"\n## {variant}\n", table(rows, variant)]
    if "clean" in args.variants.split(","):
        parts += ["\n## lungs HD95 over cases (clean; px of the 512 frame, x 0.7 for JSRT mm)\n", hd95_spread(rows)]
    if args.cases:
        write_cases(rows, args.cases)
    if args.pediatric:
        parts += [f"\n## pediatric (ZhangLab, {args.pediatric} images, no truth)\n", pediatric(models, args.data, args.pediatric)]
    if args.worst:
        first = next(iter(models))
        parts += [f"\n## ten worst clean validation cases of `{first}` ({args.worst.name}; white: truth, colour: prediction)\n",
                  worst_picture(rows, first, val, models, args.worst)]
    if args.speed:
        parts += [f"\n## speed ({args.speed} validation images, 512 px, one thread)\n", speed(models, val, args.speed)]
    parts.append(f"\n({time.perf_counter() - t0:.0f} s)\n")
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
