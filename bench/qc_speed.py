"""What QC costs per image, stage by stage, without and with the predicted Dice, in one run.

On ``--n`` films of our validation split (read once, segmented once by the bundled ``refined``
model), :func:`anatomix.qc.assess` is timed as it was before the predicted Dice (``opinion=False,
dice_model=False``: plausibility, shape model, RCA, orientation) and as it is now (plus the second
opinion: the bundled graph and pixel models and 10 latent draws run on the film by QC), and the
second opinion and RCA alone. RCA: k references, registration at 128 px (``REGISTRATION_SIZE``).
One CPU thread.

Usage::

    OMP_NUM_THREADS=1 python bench/qc_speed.py --data ../shared/data --n 20 --out bench/results/qc_speed.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    import torch

    from anatomix.data.cases import labelled_cases, split_cases
    from anatomix.io import read_radiograph
    from anatomix.io.record import Radiograph
    from anatomix.models import load_segmenter
    from anatomix.qc import assess, load_references
    from anatomix.qc.rca import REGISTRATION_SIZE, rca
    from anatomix.qc.signals import SecondOpinion

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cases = split_cases(labelled_cases(args.data))[1]
    cases = cases[:: max(1, len(cases) // args.n)][: args.n]
    model = load_segmenter("refined")
    films = [read_radiograph(c.image) for c in cases]
    segs = [model.predict([r])[0] for r in films]
    refs = load_references(None)
    opinion = SecondOpinion.bundled()
    assess(segs[0], films[0].pixels, references=refs, k=args.k)  # warm-up: loads every model once

    def timed(fn):
        t = time.perf_counter()
        for r, s in zip(films, segs):
            fn(r, s)
        return (time.perf_counter() - t) / len(films)

    t_seg = timed(lambda r, s: model.predict([r]))
    stages = {
        "QC before (plausibility, shape, RCA, orientation)":
            timed(lambda r, s: assess(s, r.pixels, references=refs, k=args.k, opinion=False, dice_model=False)),
        "QC now (+ second opinion, predicted Dice)":
            timed(lambda r, s: assess(s, r.pixels, references=refs, k=args.k)),
        "of which RCA": timed(lambda r, s: rca(r.pixels, s.masks, refs, k=args.k)),
        "of which second opinion": timed(lambda r, s: opinion(Radiograph(r.pixels))),
    }
    lines = ["# QC cost per image", "",
             f"`{' '.join(['python', 'bench/qc_speed.py'] + (argv if argv is not None else sys.argv[1:]))}`: "
             f"{len(films)} validation films (512 px), one CPU thread, k = {args.k} references, registration "
             f"at {REGISTRATION_SIZE} px.", "",
             "| stage | s / image | images / s |", "|---|---|---|",
             f"| segmentation (refined) | {t_seg:.3f} | {1 / t_seg:.1f} |"]
    lines += [f"| {name} | {t:.3f} | {1 / t:.2f} |" for name, t in stages.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
