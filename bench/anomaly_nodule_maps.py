"""Where a GIVEN detector's heat map points on JSRT nodule films (``bench/anomaly_localisation.py``
fits its own on the JSRT non-nodule films; this one measures bundled or already fitted detectors
with the same hit rule), against the nodule positions of the JSRT clinical data (``nodule_x``, ``nodule_y``, ``nodule_size_mm`` in the pack's manifest, 512 px
frame, 0.7 mm per pixel).

For every nodule film of ``cxr-seg``: the detector's heat map in the film's frame (as ``anatomix anomaly
score --maps`` writes it; an ensemble's is the mean of its members' scaled maps), the lungs of the
default segmenter (as ``--segment``), and

- **pointing game**: the map's highest point inside the lungs lies within 2 nodule radii of the
  nodule centre (``bench/anomaly_localisation.py``'s rule); its chance level is the share of lung pixels within that
  distance (a uniformly random point in the lungs), averaged over the same films;
- **rank of the nodule**: the percentile of the map value at the nodule centre among the lung
  pixels (50 % = chance, 100 % = the hottest lung pixel).

Nodules whose centre falls outside the segmented lungs (behind the heart or diaphragm) are
counted apart and left out of both figures. Prints a markdown table.

Usage::

    OMP_NUM_THREADS=1 python bench/anomaly_nodule_maps.py --detector runs/anomaly_adult_rd/adult_rd.pt \
        [--detector anomaly] [--out bench/results/anomaly_nodule_maps.md]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ANATOMIX_DATA", ROOT.parent / "shared" / "data"))
MM_PER_PX_512 = 0.7  # JSRT: 0.175 mm at 2048 px, the pack's films are 512 px


def nodule_cases(data: Path) -> list:
    """The JSRT nodule films of the pack (cases with a nodule position)."""
    from anatomix.data.cases import labelled_cases

    return [c for c in labelled_cases(data, sources=["jsrt"])
            if c.meta.get("label") == "nodule" and c.meta.get("nodule_x")]


def localise(heatmaps: list, lungs: list, cases: list) -> dict:
    """Pointing-game hits, chance level and nodule ranks of one detector's ORIGINAL-frame heat maps
    ``(H, W)`` with the films' lung masks ``(H, W)`` (see the module docstring)."""
    hits, chance, ranks, outside = [], [], [], 0
    for m, lung, case in zip(heatmaps, lungs, cases):
        cx, cy = float(case.meta["nodule_x"]), float(case.meta["nodule_y"])
        h, w = lung.shape
        if not lung[int(np.clip(round(cy), 0, h - 1)), int(np.clip(round(cx), 0, w - 1))]:
            outside += 1
            continue
        reach = float(case.meta["nodule_size_mm"]) / MM_PER_PX_512  # 2 radii = the diameter, in pixels
        yy, xx = np.mgrid[0:h, 0:w]
        near = (xx - cx) ** 2 + (yy - cy) ** 2 <= reach ** 2
        values = np.where(lung, m, -np.inf)
        hits.append(bool(near.flat[int(np.argmax(values))]))
        chance.append(float((near & lung).sum() / lung.sum()))
        centre = m[int(round(cy)), int(round(cx))]
        ranks.append(float((m[lung] < centre).mean() * 100))
    return {"n": len(hits), "outside": outside, "hit": float(np.mean(hits)), "chance": float(np.mean(chance)),
            "rank_mean": float(np.mean(ranks)), "rank_median": float(np.median(ranks))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--detector", action="append", required=True, help="detector file or bundled name (repeatable)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch

    from anatomix.anomaly.run import segment_masks
    from anatomix.io import read_radiograph
    from anatomix.models import load_detector

    torch.set_num_threads(1)
    cases = nodule_cases(a.data)
    rads = [read_radiograph(c.image) for c in cases]
    masks = [m for i in range(0, len(rads), 32) for m in segment_masks(rads[i:i + 32])]
    lines = ["# Heat-map localisation on JSRT nodule films", "",
             f"{len(cases)} nodule films of `cxr-seg` (all splits: no detector saw a nodule film); lungs of the default "
             "segmenter; hit = the hottest lung point within 2 nodule radii of the nodule "
             "centre; chance = share of lung pixels that close; rank = percentile of the map at the centre among lung "
             "pixels (50 % = chance).", "",
             "Command: `OMP_NUM_THREADS=1 python bench/anomaly_nodule_maps.py "
             + " ".join(f"--detector {d}" for d in a.detector) + (f" --out {a.out}`" if a.out else "`"), "",
             "| detector | films scored (centre outside lungs) | pointing game hits | chance | nodule rank mean / median |",
             "|---|---|---|---|---|"]
    lungs = [m["lungR"] | m["lungL"] for m in masks]
    for name in a.detector:
        det = load_detector(name)
        heat = [r.heatmap for i in range(0, len(rads), 32)
                for r in det.score(rads[i:i + 32], masks[i:i + 32], keep_maps=True)]
        r = localise(heat, lungs, cases)
        lines.append(f"| `{name}` ({det.method}, {det.image_size} px) | {r['n']} ({r['outside']}) | {r['hit']:.1%} "
                     f"| {r['chance']:.1%} | {r['rank_mean']:.1f} / {r['rank_median']:.1f} % |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
