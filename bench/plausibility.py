"""Plausibility study: graph (landmark) versus pixel (dense) segmenters, clean and corrupted.

On the validation split that ``anatomix train`` holds out (``split_cases(pack_cases(data),
0.2, seed 0)``: the same cases for both families), every validation radiograph is segmented
as it is and under corruptions applied in its original frame:

========== ============================================================================
clean      the radiograph as read
occlusion  3 blocks of 1/6 of the side at random places, each of one random grey level
noise      additive Gaussian noise, sigma 0.08 (intensities in [0, 1]), clipped
blur       Gaussian blur, sigma 1% of the side (5 px at 512)
contrast   contrast 0.4x around the mean, then 8-bit quantisation
gamma 0.5  intensity ** 0.5 (brighter)
gamma 2.0  intensity ** 2.0 (darker)
pediatric  ZhangLab pediatric normals from the pack (no reference masks: topology only)
shenzhen   the pack's Shenzhen cases (other source, lungs only; no heart reference)
========== ============================================================================

Each model is reported raw and post-processed (largest component per structure + hole
filling, :func:`anatomix.pixel.postprocess.postprocess_masks`); the graph model's raw masks are
its rasterised contours. The pixel model also gets a ``traced`` variant on clean images: its
post-processed masks traced to the template's landmark contours and rasterised again, i.e. the
masks that its CheXmask-style landmarks stand for.

Metrics per structure (original frame): Dice and HD95 (MONAI, via
:func:`anatomix.evaluation.mask_metrics`; mm from the JSRT pixel pitch), and the topological
error rate: the share of masks with more than one component or a hole (an empty mask counts).
Lungs = mean over lungR and lungL.

Usage::

    python bench/plausibility.py --data ../shared/data --graph graph --pixel pixel \
        --out bench/results/plausibility.md [--limit N] [--threads 1]

``--graph``/``--pixel`` take registry names or checkpoint paths.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
from scipy import ndimage

from anatomix.anatomy import STRUCTURE_KEYS


# -- corruptions (original frame, [0, 1] float) -------------------------------------------------
def occlusion(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape
    out = x.copy()
    b = max(h, w) // 6
    for _ in range(3):
        r, c = rng.integers(0, h - b), rng.integers(0, w - b)
        out[r : r + b, c : c + b] = rng.uniform(0, 1)
    return out


def noise(x, rng):
    return np.clip(x + rng.normal(0, 0.08, x.shape), 0, 1).astype(np.float32)


def blur(x, rng):
    return ndimage.gaussian_filter(x, 0.01 * max(x.shape)).astype(np.float32)


def contrast(x, rng):
    y = np.clip((x - x.mean()) * 0.4 + x.mean(), 0, 1)
    return (np.round(y * 255) / 255).astype(np.float32)


CORRUPTIONS: Dict[str, Callable] = {
    "clean": lambda x, rng: x,
    "occlusion": occlusion,
    "noise": noise,
    "blur": blur,
    "contrast": contrast,
    "gamma 0.5": lambda x, rng: (x ** 0.5).astype(np.float32),
    "gamma 2.0": lambda x, rng: (x ** 2.0).astype(np.float32),
}


# -- models -------------------------------------------------------------------------------------
def load(name: str):
    from anatomix.models import load_segmenter

    return load_segmenter(name, "cpu")


def predict(model, radiographs, landmarks: List | None = None) -> List[Dict[str, np.ndarray]]:
    """Raw {key: mask} per radiograph, for either family (landmarks appended to ``landmarks``)."""
    out = []
    for i in range(0, len(radiographs), 8):
        chunk = radiographs[i : i + 8]
        if getattr(model, "family", "") == "pixel":
            segs = model.predict(chunk, postprocess=False)
        else:
            segs = model.predict(chunk)
        for s in segs:
            out.append({k: s.masks[k] for k in STRUCTURE_KEYS if k in s.masks})
            if landmarks is not None:
                landmarks.append(np.asarray(s.landmarks, dtype=np.float64))
    return out


def run_models(models: Dict[str, object], radiographs, landmarks: Dict[str, List] | None = None
               ) -> Dict[str, List[Dict[str, np.ndarray]]]:
    """variant name -> masks per radiograph (each model run once; post-processing on top)."""
    from anatomix.pixel.postprocess import postprocess_masks

    variants = {}
    for name, model in models.items():
        lm = landmarks.setdefault(name, []) if landmarks is not None else None
        raw = predict(model, radiographs, lm)
        variants[f"{name} raw"] = raw
        variants[f"{name} post"] = [postprocess_masks(m) for m in raw]
    return variants


def landmark_error(pred: List[np.ndarray], true: List[np.ndarray]) -> Dict[str, float]:
    """Mean node distance (px, original frame) per structure of the lungs+heart template."""
    from anatomix.anatomy import LUNGS_HEART

    out = {}
    for k, sl in LUNGS_HEART.slices().items():
        d = [np.linalg.norm(p[sl] - t[sl], axis=1).mean() for p, t in zip(pred, true)]
        out[k] = float(np.nanmean(d))
    return out


# -- metrics ------------------------------------------------------------------------------------
def score(masks: List[Dict[str, np.ndarray]], truths, spacings) -> Dict[str, float]:
    from anatomix.evaluation import mask_metrics
    from anatomix.pixel.postprocess import topological_error

    per: Dict[str, Dict[str, list]] = {k: {"dice": [], "hd95_mm": [], "hd95_px": [], "topo": []} for k in STRUCTURE_KEYS}
    for pred, true, sp in zip(masks, truths, spacings):
        for k in STRUCTURE_KEYS:
            if k not in pred:
                continue
            per[k]["topo"].append(topological_error(pred[k]))
            if true is not None and k in true:
                m = mask_metrics(pred[k], true[k], sp)
                per[k]["dice"].append(m["dice"])
                per[k]["hd95_mm"].append(m["hd95_mm"])
                per[k]["hd95_px"].append(m["hd95_px"])
    def mean(v) -> float:
        return float(np.nanmean(v)) if len(v) and not np.all(np.isnan(v)) else float("nan")

    def lungs(f: str) -> float:
        return mean([mean(per["lungR"][f]), mean(per["lungL"][f])])

    topo_all = [t for k in STRUCTURE_KEYS for t in per[k]["topo"]]
    return {
        "dice_lungR": mean(per["lungR"]["dice"]), "dice_lungL": mean(per["lungL"]["dice"]),
        "dice_lungs": lungs("dice"), "dice_heart": mean(per["heart"]["dice"]),
        "hd95_lungs_mm": lungs("hd95_mm"), "hd95_heart_mm": mean(per["heart"]["hd95_mm"]),
        "hd95_lungs_px": lungs("hd95_px"), "hd95_heart_px": mean(per["heart"]["hd95_px"]),
        "topo_rate": mean(np.asarray(topo_all, float)) if topo_all else float("nan"),
        "n_masks": len(topo_all),
    }


def fmt(v: float, spec: str) -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--graph", default="graph", help="registry name or checkpoint ('' to skip)")
    ap.add_argument("--pixel", default="pixel", help="registry name or checkpoint ('' to skip)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/plausibility.md"))
    ap.add_argument("--limit", type=int, default=0, help="use only the first N validation cases")
    ap.add_argument("--pediatric", type=int, default=20, help="number of pediatric images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from anatomix.runtime import quiet_imports

    quiet_imports()
    from anatomix.anatomy import landmarks_to_masks
    from anatomix.data.cases import pack_cases, split_cases
    from anatomix.data.mask_dataset import case_masks
    from anatomix.evaluation import case_spacing
    from anatomix.io.read import read_radiograph
    from anatomix.models import resolve

    t0 = time.time()
    models = {}
    sources = {}
    for fam, name in (("graph", args.graph), ("pixel", args.pixel)):
        if name:
            sources[fam] = str(resolve(name))
            models[fam] = load(name)
    val = split_cases(pack_cases(args.data), 0.2, 0)[1]
    if args.limit:
        val = val[: args.limit]
    radiographs = [read_radiograph(c.image) for c in val]
    truths = [case_masks(c, STRUCTURE_KEYS) for c in val]
    spacings = [case_spacing(c.meta) for c in val]
    print(f"{len(val)} validation cases; models: {sources}", file=sys.stderr)

    results: Dict[str, Dict[str, Dict[str, float]]] = {}  # corruption -> variant -> metrics
    landmarks: Dict[str, List[np.ndarray]] = {}  # model -> clean landmarks per case
    true_landmarks = [np.load(c.landmarks)[:120].astype(np.float64) for c in val]
    for ci, (cname, fn) in enumerate(CORRUPTIONS.items()):
        rng = np.random.default_rng(args.seed + 1000 * ci)
        images = [type(r)(pixels=fn(r.pixels, rng), path=r.path, spacing=r.spacing, meta=r.meta)
                  for r in radiographs]
        clean = cname == "clean"
        variants = run_models(models, images, landmarks if clean else None)
        if clean and "pixel" in models:
            segs = []
            for i in range(0, len(images), 8):
                segs += models["pixel"].predict(images[i : i + 8])
            landmarks["pixel traced"] = [s.landmarks for s in segs]
            variants["pixel traced"] = [landmarks_to_masks(s.landmarks, s.shape) if np.isfinite(s.landmarks).all()
                                        else {k: np.zeros(s.shape, bool) for k in STRUCTURE_KEYS} for s in segs]
        results[cname] = {v: score(m, truths, spacings) for v, m in variants.items()}
        print(f"{cname}: done ({time.time() - t0:.0f} s)", file=sys.stderr)

    # other sources: pediatric (no reference) and Shenzhen (lungs only)
    import csv

    anomaly = args.data / "cxr-anomaly"
    ped = []
    with open(anomaly / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] == "zhanglab" and row["label"] == "normal" and row["split_upstream"] == "test":
                ped.append(anomaly / "zhanglab" / f"{row['id']}.png")
    ped = sorted(ped)[: args.pediatric]
    ped_images = [read_radiograph(p) for p in ped]
    results["pediatric"] = {v: score(m, [None] * len(ped_images), [None] * len(ped_images))
                            for v, m in run_models(models, ped_images).items()}
    sz = pack_cases(args.data, sources=("shenzhen",))
    sz_images = [read_radiograph(c.image) for c in sz]
    sz_truth = [{k: v for k, v in case_masks(c, ("lungR", "lungL")).items()} for c in sz]
    results["shenzhen"] = {v: score(m, sz_truth, [None] * len(sz)) for v, m in run_models(models, sz_images).items()}
    print(f"all done ({time.time() - t0:.0f} s)", file=sys.stderr)

    # the graph's own contours, and the pixel model's traced post-processed masks (its CheXmask landmarks)
    from anatomix.anatomy import masks_to_landmarks

    landmarks["SCR masks traced (tracing floor)"] = [masks_to_landmarks(t, missing="nan") for t in truths]
    lm_err = {name: landmark_error(v, true_landmarks) for name, v in landmarks.items()
              if name in ("graph", "pixel traced", "SCR masks traced (tracing floor)")}
    write_report(args, results, sources, len(val), len(ped), len(sz), time.time() - t0, argv, lm_err)
    return 0


def _sha(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _show(path: str) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


def write_report(args, results, sources, n_val, n_ped, n_sz, seconds, argv, lm_err=None) -> None:
    cmd = "python bench/plausibility.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# Plausibility study: graph vs pixel segmenters",
        "",
        "Produced by (repository root, CPU, deterministic):",
        "",
        "```",
        cmd,
        "```",
        "",
        "Models: " + ", ".join(f"{k} = `{_show(v)}` (sha256 {_sha(v)})" for k, v in sources.items()) + ".",
        (f"Cases: {n_val} validation cases of the grouped split `split_cases(pack_cases(data), 0.2, seed 0)`"
         f" (JSRT, 512x512, SCR reference masks); pediatric: {n_ped} ZhangLab normals (test split, no"
         f" reference masks: topology only); shenzhen: {n_sz} Shenzhen cases (lungs only)."
         f" Runtime {seconds:.0f} s."),
        "",
        ("Dice and HD95 per structure in the original frame (MONAI); HD95 in mm with the JSRT pitch"
         " (0.7 mm per pixel at 512; px for Shenzhen). Lungs = mean of right and left lung. Topological"
         " error = share of predicted masks (lungR, lungL, heart: 3 per image, every source) with more"
         " than one component or a hole, or empty. `raw`: the model's masks"
         " (graph: rasterised contours); `post`: largest component per structure + hole filling;"
         " `pixel traced`: the pixel masks traced to template landmark contours and rasterised again."),
        "",
        "| corruption | model | Dice lungs | Dice heart | HD95 lungs | HD95 heart | topo error |",
        "|---|---|---|---|---|---|---|",
    ]
    for cname, variants in results.items():
        unit = "px" if cname == "shenzhen" else "mm"
        for v, m in variants.items():
            hl = m["hd95_lungs_px"] if unit == "px" else m["hd95_lungs_mm"]
            hh = m["hd95_heart_px"] if unit == "px" else m["hd95_heart_mm"]
            lines.append(f"| {cname} | {v} | {fmt(m['dice_lungs'], '.4f')} | {fmt(m['dice_heart'], '.4f')} | "
                         f"{fmt(hl, '.2f')} {unit if np.isfinite(hl) else ''} | "
                         f"{fmt(hh, '.2f')} {unit if np.isfinite(hh) else ''} | "
                         f"{fmt(100 * m['topo_rate'], '.1f')} % |")
    clean = results.get("clean", {})
    if clean:
        lines += ["", "## Validation split, clean (per structure)", "",
                  "| model | Dice lungR | Dice lungL | Dice heart | HD95 lungs (mm) | HD95 heart (mm) |",
                  "|---|---|---|---|---|---|"]
        for v, m in clean.items():
            lines.append(f"| {v} | {fmt(m['dice_lungR'], '.4f')} | {fmt(m['dice_lungL'], '.4f')} | "
                         f"{fmt(m['dice_heart'], '.4f')} | {fmt(m['hd95_lungs_mm'], '.2f')} | "
                         f"{fmt(m['hd95_heart_mm'], '.2f')} |")
    if lm_err:
        lines += ["", "## Landmarks (clean validation cases)", "",
                  ("Mean distance (px, 512 frame) from the reference landmarks of the pack (HybridGNet/CheXmask"
                   " node order). `graph`: the decoder's nodes; `pixel traced`: the post-processed pixel masks"
                   " traced with `anatomix.anatomy.mask_to_contour` (the landmarks the pixel model writes). Tracing"
                   " spaces nodes equally by arc length, so its node-wise error includes sliding along the"
                   " contour: the reference SCR masks traced the same way give the floor of that method."), "",
                  "| landmarks | lungR | lungL | heart |", "|---|---|---|---|"]
        for name, e in lm_err.items():
            lines.append(f"| {name} | {e['lungR']:.2f} | {e['lungL']:.2f} | {e['heart']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
