"""Local engine against the Ray engine (1 and 2 workers), QC on and off, same images, same run.

Makes ``--n`` 512 px radiographs from the data pack's JSRT films (``tests/pack_corpus.py``),
then segments them with the default model through ``segment_batch`` into fresh folders: the
local engine (2 threads each side) and ``RayEngine`` with 1 and 2 actors on a local Ray instance
started once (its start-up is timed apart). Checks that every Ray folder equals the local one
byte for byte (``segmentations.csv``, ``errors.csv``, masks, overlays), prints images/s and
ratios against the local run of the same QC setting.

A Ray run pays a fixed start-up (actors import torch and receive the model) and then a cost per
image. One worker also runs the first ``--small`` images alone: the two sizes give both (a line
through two points), so the CheXmask extrapolation (657,566 radiographs on 1, 8 and 64 CPU
workers) uses the per-image cost of a long run plus one start-up per window of chunks. Linear
scaling across workers and nodes is assumed (only 1 and 2 workers on one 2-core machine are
measured). GPU workers: without a lent GPU machine, an estimate: the model's forward time
(``timings["predict"]`` of the local run) taken off the per-image cost, the rest (reading, QC,
writing) left on the worker's CPU.

Usage::

    nice -n 10 .venv/bin/python bench/ray_engine.py [--n 200] [--small 40] [--model refined]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pack_corpus import make_corpus

CHEXMASK = 657_566


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def timed(corpus, out: Path, segmenter, qc: bool, engine):
    from anatomix.batch import segment_batch

    t = time.perf_counter()
    summary = segment_batch(corpus, out, segmenter, qc=qc, engine=engine)
    return summary, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--small", type=int, default=40, help="images of the short one-worker run (start-up fit)")
    ap.add_argument("--model", default="refined")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from anatomix.runtime import quiet_imports

    quiet_imports()
    import ray
    import torch

    torch.set_num_threads(1)
    from anatomix.batch.ray_engine import RayEngine
    from anatomix.models import load_segmenter

    tmp = Path(tempfile.mkdtemp(prefix="anatomix-ray-bench-"))
    try:
        corpus = make_corpus(tmp / "in", args.n)
        segmenter = load_segmenter(args.model)
        t = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
        startup = time.perf_counter() - t
        rows, equal, fits, predict = [], True, {}, {}
        for qc in (False, True):
            base = None
            for name, engine in (("local", None), ("ray 1 worker", RayEngine(num_workers=1)),
                                 ("ray 2 workers", RayEngine(num_workers=2))):
                s, seconds = timed(corpus, tmp / f"{name.replace(' ', '_')}_{qc}", segmenter, qc, engine)
                if base is None:
                    base, local_files = seconds, files_of(tmp / f"{name.replace(' ', '_')}_{qc}")
                    predict[qc] = s.timings["predict"] / s.segmented
                else:
                    equal &= files_of(tmp / f"{name.replace(' ', '_')}_{qc}") == local_files
                rows.append((qc, name, s.segmented, seconds, base))
                if name == "ray 1 worker":
                    s_small, t_small = timed(corpus[:args.small], tmp / f"small_{qc}", segmenter, qc, RayEngine(num_workers=1))
                    per_image = (seconds - t_small) / (s.segmented - s_small.segmented)
                    fits[qc] = (t_small - per_image * s_small.segmented, per_image)
        ray.shutdown()
        print(f"{args.n} images, model {args.model}, {os.cpu_count()} CPUs; Ray start-up {startup:.1f} s "
              f"(not in the times below); every Ray folder byte-identical to the local one: {equal}\n")
        print("| QC | engine | images | s | images/s | vs local | s/image |\n|---|---|---:|---:|---:|---:|---:|")
        for qc, name, n, seconds, base in rows:
            print(f"| {'on' if qc else 'off'} | {name} | {n} | {seconds:.1f} | {n / seconds:.2f} | "
                  f"{base / seconds:.2f}x | {seconds / n:.3f} |")
        local_cost = {qc: seconds / n for qc, name, n, seconds, _ in rows if name == "local"}
        print(f"\nOne Ray worker, from runs of {args.small} and {args.n} images: start-up per run (actors, "
              "model transfer) and per-image cost of a long run; Ray overhead per image = that cost minus the "
              "local engine's (2 threads each side)\n\n| QC | start-up s | s/image | overhead s/image |"
              "\n|---|---:|---:|---:|")
        for qc, (fixed, per_image) in fits.items():
            print(f"| {'on' if qc else 'off'} | {fixed:.1f} | {per_image:.3f} | {per_image - local_cost[qc]:+.3f} |")
        fixed, cost = fits[True]
        window = RayEngine().window * 8  # images per window at the default batch size 8
        windows = -(-CHEXMASK // window)
        print(f"\nCheXmask ({CHEXMASK:,} radiographs), QC on, {cost:.3f} s/image per CPU worker + {fixed:.0f} s "
              f"start-up per window of {window} images ({windows} windows), linear scaling assumed (estimate):"
              "\n\n| workers | days |\n|---|---:|")
        for workers in (1, 8, 64):
            print(f"| {workers} CPU | {(CHEXMASK * cost + windows * fixed * workers) / workers / 86400:.2f} |")
        gpu_cost = cost - predict[True]
        for gpus in (1, 8):
            print(f"| {gpus} GPU (estimate: {predict[True]:.3f} s/image model time removed, "
                  f"{gpu_cost:.3f} s/image left on CPU) | "
                  f"{(CHEXMASK * gpu_cost + windows * fixed * gpus) / gpus / 86400:.2f} |")
        print("\nGPU workers: not measured (no GPU machine was lent to this task).")
        return 0 if equal else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
