"""Does the QC verdict flag failed segmentations and pass good ones?

A graph segmenter (``--checkpoint``; default the bundled ``anatomix/weights/hybridgnet_lungs_heart.pt``)
segments the validation split (``split_cases(pack_cases(data), 0.2, 0)[1]``, never used for the
atlases or the shape model) as it is, and copies of it made hard on purpose:

- ``rot90``  : rotated by 90 or 270 degrees (alternating);
- ``rot180`` : rotated by 180 degrees;
- ``mirror`` : flipped left-right (the anatomy's sides swap: the patient's right lung is now on the
  image's right, so a model that draws the usual layout gets the sides wrong);
- ``occlude``: a constant box of 60-75 % of the image side (36-56 % of the area) at a random place;
- ``noise``  : Gaussian noise of standard deviation 0.6-1.0 (image range [0, 1]) added, clipped.

The ground truth follows the image (rotated / mirrored with it; unchanged for ``occlude`` and
``noise``). Every prediction gets :func:`anatomix.qc.assess` with node-wise uncertainty from 20
latent draws, and its true Dice (mean of lungR, lungL, heart).

Definitions, fixed before running: a segmentation has **failed** when its true Dice < 0.7 (the
CheXmask cut) and is **good** when its true Dice >= 0.8; 0.7-0.8 is reported as borderline. The
figures asked for: the share of failed corrupted-copy segmentations that are flagged, and the share
of good segmentations of the unmodified validation images that pass; plus the Pearson
correlation of ``Dice RCA`` with the true Dice over all of them.

``--demo-report DIR`` also writes an HTML QC report of a batch with good and bad masks made only of
images that may be shown (``examples/images`` and ZhangLab pediatric images of the data pack,
CC BY 4.0, plus corrupted copies); the JSRT report goes to ``--report`` (keep it out of the repo).

Usage::

    nice -n 10 .venv/bin/python bench/qc_verdict.py --data ../shared/data \
        [--checkpoint runs/graph/best.pt] [--report /tmp/qc_jsrt_report] \
        [--demo-report /tmp/qc_demo --screenshot bench/results/qc_report_screenshot.png]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from anatomix.anatomy import STRUCTURE_KEYS
from anatomix.qc.quality import estimate_agreement, mean_dice

ROOT = Path(__file__).resolve().parents[1]

CORRUPTIONS = ("rot90", "rot180", "mirror", "occlude", "noise")


def corrupt(kind: str, px: np.ndarray, gt, rng, index: int):
    """(corrupted image, its ground truth)."""
    if kind == "rot90":
        k = 1 if index % 2 == 0 else 3
        return np.ascontiguousarray(np.rot90(px, k)), {key: np.rot90(m, k) for key, m in gt.items()}
    if kind == "rot180":
        return np.ascontiguousarray(np.rot90(px, 2)), {key: np.rot90(m, 2) for key, m in gt.items()}
    if kind == "mirror":
        return np.ascontiguousarray(px[:, ::-1]), {key: m[:, ::-1] for key, m in gt.items()}
    if kind == "occlude":
        h, w = px.shape
        side = rng.uniform(0.6, 0.75)
        bh, bw = int(side * h), int(side * w)
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        out = px.copy()
        out[y0:y0 + bh, x0:x0 + bw] = rng.uniform(0, 1)
        return out, gt
    if kind == "noise":
        sigma = rng.uniform(0.6, 1.0)
        return np.clip(px + rng.normal(0, sigma, px.shape), 0, 1).astype(np.float32), gt
    raise ValueError(kind)


def default_checkpoint() -> str:
    bundled = ROOT / "anatomix" / "weights" / "hybridgnet_lungs_heart.pt"
    if bundled.is_file():
        return str(bundled)
    cands = sorted(ROOT.glob("runs/graph*/best.pt"), key=lambda p: p.stat().st_mtime)
    if not cands:
        raise SystemExit("no graph checkpoint: pass --checkpoint")
    return str(cands[-1])


def run_one(segmenter, px, image_id, samples, refs, k, dice_model=None):
    from anatomix.io.record import Radiograph
    from anatomix.qc import assess

    r = Radiograph(px.astype(np.float32), Path(f"{image_id}.png"))
    pred = segmenter.predict([r])[0]
    pred.image_id = image_id
    if samples:
        pred.node_std = segmenter.sample(r, samples)[1]
    return pred, assess(pred, r.pixels, node_std=pred.node_std, references=refs, k=k, segmenter=segmenter,
                        dice_model=dice_model)


def demo_report(segmenter, out: Path, data: Path, samples: int, refs, k: int) -> None:
    """HTML report of shareable images (examples + ZhangLab pediatric) and corrupted copies."""
    from anatomix.io.read import read_radiograph
    from anatomix.qc.report import ReportWriter

    paths = sorted((ROOT / "examples" / "images").glob("*.png"))
    manifest = data / "cxr-anomaly" / "manifest.csv"
    with open(manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] == "zhanglab" and r["label"] == "normal"
                and r["split_upstream"] == "test"]
    paths += [data / "cxr-anomaly" / "zhanglab" / f"{r['id']}.png" for r in rows[:8]]
    rng = np.random.default_rng(1)
    report = ReportWriter(out, "anatomix QC demo: shareable images (NIH, ZhangLab CC BY 4.0) and corrupted copies")
    for i, p in enumerate(paths):
        px = read_radiograph(p).pixels
        variants = [(p.stem, px)]
        if i % 2 == 0:
            kind = CORRUPTIONS[(i // 2) % len(CORRUPTIONS)]
            variants.append((f"{p.stem}_{kind}", corrupt(kind, px, {}, rng, i)[0]))
        for name, img in variants:
            pred, row = run_one(segmenter, img, name, samples, refs, k)
            report.add(name, row, img, pred.masks, str(p))
    print(f"demo report: {report.close()}", file=sys.stderr)


def screenshot(page: Path, png: Path, size=(1400, 1000)) -> bool:
    """Render ``page`` in headless Chromium (offline, throw-away profile) into ``png``."""
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        print("no chromium: screenshot skipped", file=sys.stderr)
        return False
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={size[0]},{size[1]}",
                        page.resolve().as_uri()], check=False, timeout=120, capture_output=True)
    return png.is_file()


def main(argv=None) -> None:
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    from anatomix.data.cases import pack_cases, split_cases
    from anatomix.io.read import read_mask, read_radiograph
    from anatomix.models import load_segmenter
    from anatomix.qc import load_references
    from anatomix.qc.report import ReportWriter

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--report", default=None, help="folder for the HTML report of the JSRT batch (not for the repo)")
    ap.add_argument("--demo-report", default=None, help="folder for the HTML report of shareable images")
    ap.add_argument("--screenshot", default=None, help="PNG of the demo report in headless Chromium")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "qc_verdict"))
    ap.add_argument("--dice-model", default=None, help="a predicted-Dice model JSON (default: the bundled one)")
    args = ap.parse_args(argv)

    from anatomix.qc.quality import DiceModel

    dice_model = DiceModel.load(args.dice_model) if args.dice_model else None
    ckpt = args.checkpoint or default_checkpoint()
    segmenter = load_segmenter(ckpt)
    refs = load_references(None)
    if args.demo_report:
        demo_report(segmenter, Path(args.demo_report), Path(args.data), args.samples, refs, args.k)
        if args.screenshot:
            screenshot(Path(args.demo_report) / "index.html", Path(args.screenshot))
    _, val = split_cases(pack_cases(args.data), 0.2, 0)
    val = val[: args.limit]
    rng = np.random.default_rng(0)
    report = ReportWriter(args.report, "anatomix QC: JSRT validation, clean and corrupted") if args.report else None
    rows = []
    t0 = time.time()
    for i, c in enumerate(val):
        px = read_radiograph(c.image).pixels
        gt = {k: read_mask(c.masks[k]) for k in STRUCTURE_KEYS}
        variants = [("clean", px, gt)] + [(kind, *corrupt(kind, px, gt, rng, i)) for kind in CORRUPTIONS]
        for kind, img, g in variants:
            name = f"{c.case_id}_{kind}"
            pred, row = run_one(segmenter, img, name, args.samples, refs, args.k, dice_model)
            td = mean_dice(pred.masks, g)
            rows.append({"case": c.case_id, "kind": kind, "true_dice": td, **row})
            if report is not None:
                report.add(name, row, img, pred.masks)
        print(f"{i + 1}/{len(val)} {c.case_id} {time.time() - t0:.0f}s", file=sys.stderr)
    if report is not None:
        print(f"report: {report.close()}", file=sys.stderr)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cols = ["case", "kind", "true_dice", "Dice RCA (Max)", "Dice RCA (Mean)", "rca_similarity", "shape_mahalanobis",
            "flip_gain", "heart_lung_contrast", "orientation_gain", "node_std_mean", "ctr", "Predicted Dice", "qc_pass", "qc_reasons"]
    with open(f"{out}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    td = np.array([r["true_dice"] for r in rows])
    passed = np.array([bool(r["qc_pass"]) for r in rows])
    kinds = np.array([r["kind"] for r in rows])
    clean, corrupted = kinds == "clean", kinds != "clean"
    failed, good = td < 0.7, td >= 0.8

    def rate(mask, want_pass):
        n = int(mask.sum())
        if n == 0:
            return "n/a (n=0)"
        v = passed[mask] if want_pass else ~passed[mask]
        return f"{v.mean() * 100:.1f} % ({int(v.sum())}/{n})"

    lines = ["# QC verdict on failed and good segmentations", "",
             f"Model: `{Path(ckpt).relative_to(ROOT) if Path(ckpt).is_relative_to(ROOT) else ckpt}`; "
             f"validation cases: {len(val)}; segmentations: {len(rows)} "
             f"({int(clean.sum())} clean + {int(corrupted.sum())} corrupted copies); "
             f"RCA on the bundled atlases, k={args.k}; node std from {args.samples} latent draws.",
             "Failed = true Dice < 0.7, good = true Dice >= 0.8 (fixed before the run).", "",
             "| set | figure | value |", "|---|---|---|",
             f"| corrupted copies, failed (true Dice < 0.7) | **flagged** | **{rate(corrupted & failed, False)}** |",
             f"| clean validation images, good (true Dice >= 0.8) | **passed** | **{rate(clean & good, True)}** |",
             f"| all failed segmentations | flagged | {rate(failed, False)} |",
             f"| all good segmentations | passed | {rate(good, True)} |",
             f"| all segmentations with true Dice >= 0.93 | passed | {rate(td >= 0.93, True)} |",
             f"| corrupted copies that are still good | passed | {rate(corrupted & good, True)} |",
             f"| clean images, any quality | passed | {rate(clean, True)} |",
             f"| borderline (0.7 <= true Dice < 0.8) | passed | {rate((td >= 0.7) & (td < 0.8), True)} |", "",
             "| corruption | n | true Dice median | failed | failed flagged | good | good passed |",
             "|---|---|---|---|---|---|---|"]
    for kind in ("clean",) + CORRUPTIONS:
        m = kinds == kind
        lines.append(f"| {kind} | {int(m.sum())} | {np.median(td[m]):.3f} | {int((m & failed).sum())} | "
                     f"{rate(m & failed, False)} | {int((m & good).sum())} | {rate(m & good, True)} |")
    lines += ["", "RCA against the true Dice over all segmentations:", "",
              "| estimate | n | Pearson r | Spearman rho | MAE |", "|---|---|---|---|---|"]
    for est in ("Dice RCA (Max)", "Dice RCA (Mean)"):
        s = estimate_agreement(np.array([float(r[est]) for r in rows]), td)
        lines.append(f"| {est} | {s['n']} | {s['pearson']:.3f} | {s['spearman']:.3f} | {s['mae']:.3f} |")
    reasons_failed, reasons_good = Counter(), Counter()
    for r, f_, g_ in zip(rows, failed, good):
        codes = {x.split("(")[0] for x in str(r["qc_reasons"]).split(";") if x}
        (reasons_failed if f_ else reasons_good if g_ else Counter()).update(codes)
    lines += ["", "Reasons given (images counted once per reason):", "",
              "| reason | failed segmentations | good segmentations |", "|---|---|---|"]
    for code in sorted(set(reasons_failed) | set(reasons_good), key=lambda c: -reasons_failed[c]):
        lines.append(f"| {code} | {reasons_failed[code]} | {reasons_good[code]} |")
    missed = [r for r, f_ in zip(rows, failed) if f_ and r["qc_pass"]]
    false_flags = [r for r, g_, cl in zip(rows, good, clean) if g_ and cl and not r["qc_pass"]]
    if missed:
        lines += ["", "Failed but passed: " + ", ".join(
            f"{r['case']}/{r['kind']} (true {r['true_dice']:.2f}, RCA mean {float(r['Dice RCA (Mean)']):.2f})"
            for r in missed)]
    if false_flags:
        lines += ["", "Good clean segmentations flagged: " + ", ".join(
            f"{r['case']} ({r['qc_reasons']}, true {r['true_dice']:.2f})" for r in false_flags)]
    lines += ["", "Command: `" + " ".join(["python bench/qc_verdict.py"] + (argv or sys.argv[1:])) + "`",
              f"Wall time {time.time() - t0:.0f} s on a shared 2-core CPU."]
    text = "\n".join(lines) + "\n"
    Path(f"{out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
