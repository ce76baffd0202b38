"""End-to-end speed of ``segment_batch`` against the bare model forward pass, same images, same run.

Makes ``--n`` 512 px 8-bit PNG radiographs in a temporary folder (copies of the data pack's
JSRT images (tests/pack_corpus.py), flipped / gamma-shifted / shifted so no two files are equal; nothing is
written into the repository), then times, ``--repeats`` times in turn:

- ``forward``: the model alone on tensors already in memory (images read and brought to the
  model frame beforehand, untimed): the floor that batching cannot beat;
- ``predict``: ``segmenter.predict`` on radiographs already in memory (adds preprocessing,
  inverse geometry and mask rasterisation);
- ``batch wN``: ``segment_batch`` from the files on disk to a fresh output folder (decode,
  predict, masks, RLE, CSV) with N worker threads (0 = all in the main thread).

Prints a Markdown table of medians with images/s and the share of the end-to-end time that is
not the forward pass (the goal: under 20 %), in wall time and in process CPU time (all threads):
on a shared, busy machine the wall times swing with the other loads, the CPU times much less. QC columns are off (``qc=False``): QC is its own
cost, measured by the QC benchmarks.

Usage::

    nice -n 10 .venv/bin/python bench/batch_speed.py [--n 500] [--repeats 3] [--model graph] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pack_corpus import make_corpus


def clock() -> tuple[float, float]:
    """(wall, process CPU of all threads) seconds."""
    return time.perf_counter(), time.process_time()


def since(t0: tuple[float, float]) -> tuple[float, float]:
    t1 = clock()
    return t1[0] - t0[0], t1[1] - t0[1]


def time_forward(segmenter, radiographs, batch_size: int) -> tuple[float, float]:
    import torch

    from anatomix.data.preprocess import to_model_frame

    x = torch.from_numpy(np.stack([to_model_frame(r.pixels, segmenter.size)[0] for r in radiographs]))[:, None]
    x = x.to(segmenter.device)
    t = clock()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            segmenter.model(x[i:i + batch_size]).landmarks.cpu()
    return since(t)


def time_predict(segmenter, radiographs, batch_size: int) -> tuple[float, float]:
    t = clock()
    for i in range(0, len(radiographs), batch_size):
        segmenter.predict(radiographs[i:i + batch_size])
    return since(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--model", default="graph")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (0: torch's default). On a shared, loaded machine use 1: "
                         "OpenMP threads spin-wait for preempted siblings and the timings explode")
    args = ap.parse_args()

    from anatomix.runtime import quiet_imports

    quiet_imports()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from anatomix.batch import segment_batch
    from anatomix.io.read import read_radiograph
    from anatomix.models import load_segmenter

    tmp = Path(tempfile.mkdtemp(prefix="anatomix-batch-speed-"))
    try:
        files = make_corpus(tmp / "in", args.n)
        segmenter, described = load_segmenter(args.model, args.device), args.model
        radiographs = [read_radiograph(p) for p in files]
        segmenter.predict(radiographs[: args.batch_size])  # warm-up
        times: dict[str, list[tuple[float, float]]] = {"forward": [], "predict": []}
        for w in args.workers:
            times[f"batch w{w}"] = []
        for rep in range(args.repeats):
            times["forward"].append(time_forward(segmenter, radiographs, args.batch_size))
            times["predict"].append(time_predict(segmenter, radiographs, args.batch_size))
            for w in args.workers:
                out = tmp / f"out-{rep}-{w}"
                t = clock()
                s = segment_batch([tmp / "in"], out, segmenter, batch_size=args.batch_size, workers=w,
                                  qc=False, progress=False)
                times[f"batch w{w}"].append(since(t))
                assert s.segmented == args.n and s.exit_code == 0, s.line()
                shutil.rmtree(out)
            print(f"repeat {rep + 1}/{args.repeats}: " + ", ".join(
                f"{k} {v[-1][0]:.1f}s wall {v[-1][1]:.1f}s cpu" for k, v in times.items()), file=sys.stderr, flush=True)
        wall = {k: statistics.median(x[0] for x in v) for k, v in times.items()}
        cpu = {k: statistics.median(x[1] for x in v) for k, v in times.items()}
        print(f"{args.n} images, 512x512 8-bit PNG; model: {described}; device {args.device}; "
              f"batch size {args.batch_size}; torch threads {torch.get_num_threads()}; "
              f"os.cpu_count {os.cpu_count()}; load average at the end {os.getloadavg()[0]:.1f}; "
              f"median of {args.repeats}\n")
        print("| stage | wall s | images/s | not forward (wall) | CPU s | not forward (CPU) |")
        print("|---|---:|---:|---:|---:|---:|")
        for k, w in wall.items():
            print(f"| {k} | {w:.1f} | {args.n / w:.1f} | {1 - wall['forward'] / w:.0%} "
                  f"| {cpu[k]:.1f} | {1 - cpu['forward'] / cpu[k]:.0%} |")
        print("\nall runs (wall s / CPU s): " + "; ".join(
            f"{k}: {', '.join(f'{a:.1f}/{b:.1f}' for a, b in v)}" for k, v in times.items()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
