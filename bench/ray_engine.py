"""Local engine against the Ray engine (1 and 2 workers), QC on and off, same images, same run.

Makes ``--n`` 512 px radiographs from the data pack's JSRT films (``tests/pack_corpus.py``),
then segments them with the default model through ``segment_batch`` into fresh folders: the
local engine (2 threads each side) and ``RayEngine`` with 1 and 2 actors on a local Ray instance
started once (its start-up is timed apart). Checks that every Ray folder equals the local one
byte for byte, prints images/s, ratios against the local run of the same QC setting, the Ray
overhead per image, and extrapolates the measured per-image cost to the CheXmask collection
(657,566 radiographs) on 1, 8 and 64 CPU workers, assuming linear scaling (an estimate: only 1
and 2 workers on one 2-core machine were measured). GPU figures are not measured here.

Usage::

    nice -n 10 .venv/bin/python bench/ray_engine.py [--n 24] [--model refined]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--model", default="refined")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from anatomix.runtime import quiet_imports

    quiet_imports()
    import ray
    import torch

    torch.set_num_threads(1)
    from anatomix.batch import segment_batch
    from anatomix.batch.ray_engine import RayEngine
    from anatomix.models import load_segmenter

    tmp = Path(tempfile.mkdtemp(prefix="anatomix-ray-bench-"))
    try:
        corpus = make_corpus(tmp / "in", args.n)
        segmenter = load_segmenter(args.model)
        t = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
        startup = time.perf_counter() - t
        rows, equal = [], True
        for qc in (False, True):
            base = None
            for name, engine in (("local", None), ("ray 1 worker", RayEngine(num_workers=1)),
                                 ("ray 2 workers", RayEngine(num_workers=2))):
                out = tmp / f"{name.replace(' ', '_')}_{qc}"
                t = time.perf_counter()
                s = segment_batch(corpus, out, segmenter, qc=qc, engine=engine)
                seconds = time.perf_counter() - t
                if base is None:
                    base, local_files = seconds, files_of(out)
                else:
                    equal &= files_of(out) == local_files
                rows.append((qc, name, s.segmented, seconds, base))
        ray.shutdown()
        print(f"{args.n} images, model {args.model}, {os.cpu_count()} CPUs; Ray start-up {startup:.1f} s "
              f"(not in the times below); every Ray folder byte-identical to the local one: {equal}\n")
        print("| QC | engine | images | s | images/s | vs local | s/image |\n|---|---|---:|---:|---:|---:|---:|")
        per_image = {}
        for qc, name, n, seconds, base in rows:
            per_image[(qc, name)] = seconds / n
            print(f"| {'on' if qc else 'off'} | {name} | {n} | {seconds:.1f} | {n / seconds:.2f} | "
                  f"{base / seconds:.2f}x | {seconds / n:.3f} |")
        print("\nRay overhead per image (1 worker minus local, same QC): "
              + "; ".join(f"QC {'on' if qc else 'off'} {per_image[(qc, 'ray 1 worker')] - per_image[(qc, 'local')]:+.3f} s"
                          for qc in (False, True)))
        cost = per_image[(True, "ray 1 worker")]
        print(f"\nCheXmask ({CHEXMASK:,} radiographs), QC on, from the measured {cost:.3f} s/image of one Ray "
              "worker, linear scaling assumed (estimate):\n\n| CPU workers | days |\n|---:|---:|")
        for workers in (1, 8, 64):
            print(f"| {workers} | {CHEXMASK * cost / workers / 86400:.2f} |")
        print("\nGPU workers: not measured (no GPU machine was lent to this task).")
        return 0 if equal else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
