"""Scoring speed of anomaly detectors, same process: images/s and the ratio to the first one.

The films (pediatric ZhangLab test films, or adult validation films) are read and segmented once
beforehand (default segmenter), so the table times the detectors alone, with masks, as
``anatomix anomaly score --segment`` would call them after segmentation; one thread; median of
``--repeats`` alternating runs.

Usage::

    OMP_NUM_THREADS=1 python bench/anomaly_detector_speed.py anomaly runs/anomaly_ensemble_v2.pt anomaly-ensemble \\
        runs/ped_zones/ped_zones.pt --films 96 --out bench/results/anomaly_detector_speed.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ANATOMIX_DATA", ROOT.parent / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("detectors", nargs="+", help="registry names or files; the first is the baseline")
    ap.add_argument("--films", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch

    from anatomix.anomaly.run import segment_masks
    from anatomix.data.anomaly_pack import anomaly_cases
    from anatomix.io import read_radiograph
    from anatomix.models import load_detector

    torch.set_num_threads(1)
    cases = anomaly_cases(a.data, source="zhanglab", split="test")[:a.films]
    films = [read_radiograph(c.path) for c in cases]
    masks = segment_masks(films)
    dets = {name: load_detector(name) for name in a.detectors}
    times: dict[str, list[float]] = {name: [] for name in dets}
    for _ in range(a.repeats):
        for name, det in dets.items():
            t0 = time.perf_counter()
            det.score(films, masks)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[a.detectors[0]])
    lines = ["# Anomaly detectors: scoring speed, same process\n",
             f"{len(films)} ZhangLab test films read and segmented beforehand; `score(films, masks)`; one thread; "
             f"median of {a.repeats} alternating runs. Command: `python {' '.join(sys.argv)}`\n",
             "| detector | what | films/s | time vs the first |", "|---|---|---:|---:|"]
    for name, det in dets.items():
        t = statistics.median(times[name])
        what = repr(det) if det.method == "ensemble" else f"{det.method} @ {det.image_size} px"
        lines.append(f"| {name} | {what} | {len(films) / t:.0f} | {t / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
