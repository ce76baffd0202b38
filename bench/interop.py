"""Interop: ONNX parity and onnxruntime vs torch speed, MONAI Bundle parity, on pack images.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/interop.py            # 50 images, 1 thread
    .venv/bin/python bench/interop.py --n 50 --threads 1 --repeats 3 --out bench/results/interop.md

What it measures, in one process, on the first ``--n`` JSRT images of the data pack (sorted
ids; ``cxr-seg/jsrt``, 512 px) for the segmenters and the first ``--n`` ZhangLab images
(``cxr-anomaly/zhanglab``) for the anomaly detector:

- **Parity** (the issue's thresholds): max |torch - onnxruntime| of graph landmarks (original
  pixels, < 0.01), pixel-model probabilities (original frame, < 1e-4), anomaly scores (< 1e-4);
  and of the MONAI Bundles run through ``monai.bundle.ConfigParser`` vs ``anatomix`` image by
  image (landmarks < 1e-4 px, masks pixel-equal; anomaly scores < 1e-4, verdicts equal).
- **Speed**: images/s of ``predict`` in batches of 8 (``anatomix segment``'s default; images
  already read; preprocessing, model, mapping back and masks included, the same code in both
  runtimes) and of the network alone on preprocessed batches of 8; torch and onnxruntime with the same number of threads, timed alternately, median of
  ``--repeats`` after a warm-up. The ratio within this one run is the figure to keep.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("ANATOMIX_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "interop.md")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from anatomix.anomaly import Detector
    from anatomix.export import load_spec
    from anatomix.export.bundle import export_bundle
    from anatomix.export.onnx import export_onnx
    from anatomix.export.runtime import load_onnx_segmenter, onnx_detector
    from anatomix.io import read_radiograph
    from anatomix.models import load_segmenter, resolve

    jsrt = sorted(p for p in (DATA / "cxr-seg" / "jsrt").glob("*.png") if "_" not in p.stem)[: args.n]
    zhang = sorted((DATA / "cxr-anomaly" / "zhanglab").glob("*.png"))[: args.n]
    if len(jsrt) < args.n or len(zhang) < args.n:
        sys.exit(f"data pack not found or too small at {DATA}")
    seg_images = [read_radiograph(p) for p in jsrt]
    ano_images = [read_radiograph(p) for p in zhang]
    tmp = Path(tempfile.mkdtemp(prefix="anatomix-interop-"))
    rows, parity, bundle_rows = [], [], []

    for name in ("graph", "pixel"):
        info = export_onnx(load_spec(name), tmp / f"onnx_{name}")
        ts, os_ = load_segmenter(name), load_onnx_segmenter(str(tmp / f"onnx_{name}"), threads=args.threads)
        kw = {"with_probabilities": True} if name == "pixel" else {}
        a, b = ts.predict(seg_images, **kw), os_.predict(seg_images, **kw)
        lm = max(float(np.nanmax(np.abs(x.landmarks - y.landmarks))) for x, y in zip(a, b))
        masks = max(float(np.mean(x.masks[k] != y.masks[k])) for x, y in zip(a, b) for k in x.masks)
        if name == "graph":
            parity.append(("graph landmarks, original px", lm, 0.01))
        else:
            prob = max(float(np.abs(x.extra["probabilities"] - y.extra["probabilities"]).max()) for x, y in zip(a, b))
            parity.append(("pixel probabilities, original frame", prob, 1e-4))
            parity.append(("pixel traced landmarks, original px", lm, None))
        parity.append((f"{name} masks, fraction of pixels differing (max over images)", masks, None))
        # speed: end to end, and the network alone on preprocessed batches of 8
        prepared = [ts.prepare(r)[0] if hasattr(ts, "prepare") else None for r in seg_images]
        x = torch.from_numpy(np.stack([p for p in prepared if p is not None] or
                                      [ts.model_inputs([r])[0][0, 0].numpy() for r in seg_images]))[:, None]
        chunks = [seg_images[i:i + 8] for i in range(0, len(seg_images), 8)]  # segment's default batch size
        predict = {"torch": lambda s=ts, chunks=chunks: [s.predict(c) for c in chunks],
                   "onnxruntime": lambda s=os_, chunks=chunks: [s.predict(c) for c in chunks]}
        network = {"torch": lambda s=ts, x=x: [s.model(x[i:i + 8]) for i in range(0, len(x), 8)],
                   "onnxruntime": lambda s=os_, x=x: [s.model(x[i:i + 8]) for i in range(0, len(x), 8)]}
        with torch.inference_mode():
            for what, fns in (("predict (end to end)", predict), ("network, batches of 8", network)):
                rate = {}
                for rt in ("torch", "onnxruntime", "torch", "onnxruntime"):  # alternate: drift hits both
                    rate.setdefault(rt, []).append(len(seg_images) / timed(fns[rt], max(1, args.repeats // 2)))
                r_t, r_o = max(rate["torch"]), max(rate["onnxruntime"])
                rows.append((name, what, r_t, r_o, r_o / r_t))
        print(name, info["parts"]["model"]["parity_random_inputs"], rows[-2:], flush=True)
        # the bundle through MONAI's ConfigParser vs anatomix
        from monai.bundle import ConfigParser

        bdir = export_bundle(load_spec(name), tmp / f"bundle_{name}")
        data_dir = tmp / "jsrt"
        data_dir.mkdir(exist_ok=True)
        for p in jsrt:
            if not (data_dir / p.name).exists():
                (data_dir / p.name).symlink_to(p)
        parser = ConfigParser()
        parser.read_config(str(bdir / "configs/inference.json"))
        parser.read_meta(str(bdir / "configs/metadata.json"))
        parser["bundle_root"], parser["dataset_dir"], parser["output_dir"] = str(bdir), str(data_dir), str(tmp / f"eval_{name}")
        parser["device"] = "$torch.device('cpu')"
        parser.get_parsed_content("initialize")
        results = {r["image_id"]: r["landmarks"] for r in parser.get_parsed_content("run")[0]}
        from PIL import Image

        worst = mask_diff = 0.0
        one_by_one = [ts.predict([r])[0] for r in seg_images]  # the bundle's batches hold one image
        for r, s in zip(seg_images, one_by_one):
            got = np.asarray(results[r.image_id])
            both = np.isfinite(got) & np.isfinite(s.landmarks)
            worst = max(worst, float(np.abs(got[both] - s.landmarks[both]).max()))
            for k, m in s.masks.items():
                png = np.asarray(Image.open(tmp / f"eval_{name}" / f"{r.image_id}_{k}.png")) > 0
                mask_diff = max(mask_diff, float(np.mean(png != m)))
        bundle_rows.append((name, len(results), worst, mask_diff))

    # the refined segmenter (graph contours moved onto the pixel model's boundaries): the bundled
    # one when the registry has it, else one naming the bundled graph and pixel models
    from anatomix.models import REGISTRY

    refined = "refined"
    if refined not in REGISTRY:
        from anatomix.refine import save_refined

        refined = str(tmp / "refined.pt")
        save_refined(refined, "graph", "pixel")
    export_onnx(load_spec(refined), tmp / "onnx_refined")
    a = load_segmenter(refined).predict(seg_images)
    b = load_onnx_segmenter(str(tmp / "onnx_refined"), threads=args.threads).predict(seg_images)
    parity.insert(2, ("refined landmarks, original px", max(float(np.nanmax(np.abs(x.landmarks - y.landmarks)))
                                                            for x, y in zip(a, b)), 0.01))

    det = Detector.load(resolve("anomaly"))
    export_onnx(load_spec("anomaly"), tmp / "onnx_anomaly")
    od = onnx_detector(det, tmp / "onnx_anomaly" / "model.onnx", threads=args.threads)
    sa, sb = det.score(ano_images), od.score(ano_images)
    parity.append(("anomaly scores", max(abs(x.score - y.score) for x, y in zip(sa, sb)), 1e-4))
    parity.append(("anomaly verdicts differing", float(sum(x.anomalous != y.anomalous for x, y in zip(sa, sb))), None))
    # the detector's bundle through MONAI's ConfigParser vs anatomix, image by image
    from monai.bundle import ConfigParser

    bdir = export_bundle(load_spec("anomaly"), tmp / "bundle_anomaly")
    zdir = tmp / "zhanglab"
    zdir.mkdir(exist_ok=True)
    for p in zhang:
        (zdir / p.name).symlink_to(p)
    parser = ConfigParser()
    parser.read_config(str(bdir / "configs/inference.json"))
    parser.read_meta(str(bdir / "configs/metadata.json"))
    parser["bundle_root"], parser["dataset_dir"], parser["output_dir"] = str(bdir), str(zdir), str(tmp / "eval_anomaly")
    parser["device"] = "$torch.device('cpu')"
    parser.get_parsed_content("initialize")
    scores = {r["image_id"]: (r["score"], r["anomalous"]) for r in parser.get_parsed_content("run")[0]}
    one = [det.score([r])[0] for r in ano_images]
    bundle_anomaly = (len(scores), max(abs(scores[r.image_id][0] - s.score) for r, s in zip(ano_images, one)),
                      sum(scores[r.image_id][1] != s.anomalous for r, s in zip(ano_images, one)))
    rate = {}
    for rt, d in (("torch", det), ("onnxruntime", od), ("torch", det), ("onnxruntime", od)):
        rate.setdefault(rt, []).append(len(ano_images) / timed(lambda d=d: d.score(ano_images), max(1, args.repeats // 2)))
    rows.append(("anomaly", "score (end to end)", max(rate["torch"]), max(rate["onnxruntime"]),
                 max(rate["onnxruntime"]) / max(rate["torch"])))

    import hashlib

    import onnxruntime

    weights = ", ".join(f"{n} `{hashlib.sha256(resolve(n).read_bytes()).hexdigest()[:12]}`"
                        for n in ("graph", "pixel", "anomaly"))
    load = os.getloadavg()
    lines = [
        "# Interop: ONNX parity and speed, MONAI Bundle parity",
        "",
        f"`{' '.join(['OMP_NUM_THREADS=' + os.environ.get('OMP_NUM_THREADS', '(unset)'), '.venv/bin/python', 'bench/interop.py', '--n', str(args.n), '--threads', str(args.threads), '--repeats', str(args.repeats)])}`",
        "",
        (f"{args.n} JSRT images (cxr-seg, 512 px) for graph and pixel, {args.n} ZhangLab images (cxr-anomaly) for "
         f"the anomaly detector; bundled weights (sha256: {weights}). torch "
         f"{torch.__version__}, onnxruntime {onnxruntime.__version__}, opset 17, {args.threads} thread(s) each; "
         f"load average at the end {load[0]:.2f} (shared 2-core machine: compare ratios within this run)."),
        "",
        "## Parity (torch vs onnxruntime, same inputs)",
        "",
        "| what | max abs difference | threshold |",
        "|---|---|---|",
        *[f"| {w} | {v:.3g} | {'< ' + format(t, 'g') if t else '-'} |" for w, v, t in parity],
        "",
        "## MONAI Bundle (`monai.bundle.ConfigParser`, `initialize` + `run`) vs anatomix",
        "",
        "| model | images | max landmark difference (px) | masks: fraction of pixels differing (max) |",
        "|---|---|---|---|",
        *[f"| {n} | {k} | {w:.3g} | {m:.3g} |" for n, k, w, m in bundle_rows],
        "",
        (f"Anomaly detector bundle, {bundle_anomaly[0]} ZhangLab images: max score difference "
         f"{bundle_anomaly[1]:.3g}, verdicts differing {bundle_anomaly[2]}."),
        "",
        "## Speed (images/s, batches of 8, best of two alternating timings, each a median of repeats)",
        "",
        "| model | what | torch | onnxruntime | onnxruntime / torch |",
        "|---|---|---|---|---|",
        *[f"| {n} | {w} | {t:.1f} | {o:.1f} | {r:.2f} |" for n, w, t, o, r in rows],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    ok = all(t is None or v < t for _, v, t in parity) and all(w < 1e-4 for _, _, w, _ in bundle_rows) \
        and bundle_anomaly[1] < 1e-4 and bundle_anomaly[2] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
