"""Quality figures of a graph model beyond Dice: contour validity and node-wise uncertainty.

Usage::

    .venv/bin/python bench/graph_quality.py --model graph --data ../shared/data [--samples 1000]

On the held-out validation split (fraction 0.2, seed 0, as in training) it reports:

- how often an output contour self-intersects: the eval prediction of each validation image,
  ``--samples`` posterior draws (z ~ N(mu, sigma) of a validation image) and ``--samples``
  prior draws (z ~ N(0, I) decoded with a validation image's skip features);
- node-wise uncertainty (mean node std in px, 30 latent draws) on each validation image and on
  the same image with its centre occluded by a flat block, and how often it grows.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from anatomix.runtime import quiet_imports

quiet_imports()

from anatomix.anatomy import contour_self_intersects  # noqa: E402
from anatomix.data.cases import pack_cases, split_cases  # noqa: E402
from anatomix.io import Radiograph, read_radiograph  # noqa: E402
from anatomix.models import load_segmenter  # noqa: E402


def crossing_rate(landmarks: np.ndarray, template) -> float:
    """Fraction of (draw, structure) contours that self-intersect; landmarks (D, N, 2)."""
    hits = [contour_self_intersects(c) for lm in landmarks for c in template.split(lm).values()]
    return float(np.mean(hits))


def draws(segmenter, images: list, n: int, prior: bool, seed: int = 0) -> np.ndarray:
    """(n, N, 2) model-frame landmarks: latent draws decoded with the images' skip features."""
    model, gen = segmenter.model, torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(n):
            x = segmenter._inputs([images[i % len(images)]])[0]
            mu, logvar, maps = model.encoder(x)
            eps = torch.randn(mu.shape, generator=gen)
            z = eps if prior else mu + eps * torch.exp(0.5 * logvar)
            out.append(model.decoder(z, model._skip_maps(maps))[0][0].numpy())
    return np.stack(out) * segmenter.size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="graph")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    seg = load_segmenter(args.model)
    val = split_cases(pack_cases(args.data))[1]
    images = [read_radiograph(c.image) for c in val]
    preds = np.stack([s.landmarks for s in seg.predict(images, with_masks=False)])
    print(f"model {args.model}; {len(val)} validation images\n")
    print("| outputs | contours | self-intersecting |\n|---|---:|---:|")
    for name, lm in [("eval predictions", preds),
                     (f"{args.samples} posterior draws", draws(seg, images, args.samples, prior=False)),
                     (f"{args.samples} prior draws", draws(seg, images, args.samples, prior=True))]:
        n = len(lm) * len(seg.template.structures)
        print(f"| {name} | {n} | {100 * crossing_rate(lm, seg.template):.2f}% |")
    clean, occluded = [], []
    for r in images:
        h, w = r.shape
        blocked = r.pixels.copy()
        blocked[h // 5: 4 * h // 5, w // 8: 7 * w // 8] = float(blocked.mean())
        clean.append(seg.sample(r, n=30)[1].mean())
        occluded.append(seg.sample(Radiograph(blocked), n=30)[1].mean())
    clean, occluded = np.array(clean), np.array(occluded)
    print("\n| images | mean node std (px), clean | occluded | occluded > clean |\n|---|---:|---:|---:|")
    print(f"| {len(images)} | {clean.mean():.2f} | {occluded.mean():.2f} | "
          f"{100 * np.mean(occluded > clean):.0f}% |")


if __name__ == "__main__":
    main()
