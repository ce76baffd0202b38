"""What QC costs per image, before and after issue 16's item 4 ("faster QC"), in one run.

On ``--n`` films of our validation split (512 px; read once, segmented once by the bundled
``refined`` model with QC's 10 uncertainty draws), every figure is measured twice in the same
process, first with the settings of before, then with today's:

- **before**: RCA registration :data:`~anatomix.qc.rca.LEGACY_REGISTRATION` (optimised at 64 px,
  60 + 20 + 30 Adam steps, MONAI's LNCC), the second opinion (bundled graph + pixel models, 10
  latent draws; each model's own ``predict``) always run on the film by QC, the mirrored-image
  test run by the segmenter itself (with its 10 draws and masks), holes counted with
  ``binary_fill_holes`` and counted twice (plausibility, then the signals): the QC of commit
  64853a8, restored here by :func:`before`;
- **after**: :data:`~anatomix.qc.rca.DEFAULT_REGISTRATION` (optimised at 32 px, 40 + 15 + 20
  steps, box-filter LNCC), holes by one labelling and counted once, the second opinion's input
  prepared once (the same masks), the graph model's Chebyshev layers as dense products
  (:class:`~anatomix.graphs.model.FixedGraphChebConv`; before: torch_geometric's sparse
  propagation) and its latent draws from the encoder pass of its mean, and, where the masks come from the bundled ``refined`` model
  (``anatomix segment``), the second opinion taken from the segmentation
  (:meth:`anatomix.qc.signals.SecondOpinion.reuse`) and the mirrored-image test run by the
  opinion's draw-free twin of the segmenter (:meth:`~anatomix.qc.signals.SecondOpinion.twin`).

Both use k references (``--k``) in the 128-px frame. Tables: :func:`anatomix.qc.assess` per film
as ``anatomix qc`` runs it (no segmenter: the second opinion runs) and as ``anatomix segment``
runs it (with the segmenter: the mirrored-image test runs it on the flipped film, and the second
opinion is reused after); RCA and the second opinion alone; and ``segment_batch`` end to end
(``workers=0``: everything in one thread, so images/s is 1 / (segmentation + QC)) with QC off,
QC before, QC after (``--rounds`` rounds, medians). Per-stage figures alternate before and after
film by film, so the load of a shared machine falls on both. One CPU thread.

Usage::

    OMP_NUM_THREADS=1 python bench/qc_speed.py --data ../shared/data --n 20 --out bench/results/qc_speed.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _count_holes_before(mask, min_size=None) -> int:
    """``anatomix.qc.plausibility.count_holes`` as it was (``binary_fill_holes``, then a labelling)."""
    import numpy as np
    from scipy import ndimage

    from anatomix.qc.plausibility import _min_size

    m = np.asarray(mask, bool)
    min_size = _min_size(m.shape) if min_size is None else min_size
    lab, n = ndimage.label(ndimage.binary_fill_holes(m) & ~m)
    return 0 if n == 0 else int((np.bincount(lab.ravel())[1:] >= min_size).sum())


def _opinion_before(self, radiograph):
    """``SecondOpinion.__call__`` as it was (each model's own ``predict``, the input prepared three
    times, the pixel model's landmarks traced)."""
    from anatomix.qc.rca import _one_thread
    from anatomix.qc.signals import Opinion

    with self._lock, _one_thread():
        g = self.graph.predict([radiograph])[0]
        p = self.pixel.predict([radiograph])[0]
        std = self._node_std(self.graph.sample(radiograph, self.samples)[1], radiograph.shape) if self.samples else {}
    return Opinion(dict(g.masks), dict(p.masks), std)


def _graph_predict_before(self, radiographs, with_masks=True, prepared=None, samples=None):
    """``GraphSegmenter.predict`` as it was: the mean decoded, then each image's draws with their
    own encoder pass (:meth:`~anatomix.graphs.inference.GraphSegmenter.sample`)."""
    import numpy as np

    x, frames = self._inputs(radiographs, prepared)
    model_xy = self.model(x).landmarks.cpu().numpy().astype(np.float64) * self.size
    results = [self._result(r, f, p, with_masks) for r, f, p in zip(radiographs, frames, model_xy)]
    n = self.uncertainty_samples if samples is None else samples
    for seg, xi, frame in zip(results, x, frames) if n else ():
        seg.node_std = self._draws(xi[None], frame, n, seed=0)[1]
    return results


@contextmanager
def before():
    """QC as it was before item 4, apart from the registration settings (passed by the caller):
    the second opinion is never reused, the mirrored-image test runs the segmenter itself (with
    its draws), holes are counted the old way, and twice; the graph model's Chebyshev layers
    propagate sparsely and its draws run their own encoder pass."""
    import torch

    from anatomix.graphs.inference import GraphSegmenter
    from anatomix.graphs.model import sparse_propagation
    from anatomix.qc import plausibility, signals

    op = signals.SecondOpinion
    saved = (plausibility.count_holes, signals.mask_signals, op.reuse, op.twin, op.__call__, GraphSegmenter.predict)
    mask_signals = signals.mask_signals
    plausibility.count_holes = _count_holes_before
    signals.mask_signals = lambda masks, rca=None, keys=None, plaus=None: mask_signals(masks, rca, keys)
    op.reuse = lambda self, seg, segmenter, radiograph: None
    op.twin = lambda self, segmenter: None
    op.__call__ = _opinion_before
    GraphSegmenter.predict = torch.no_grad()(_graph_predict_before)
    try:
        with sparse_propagation():
            yield
    finally:
        plausibility.count_holes, signals.mask_signals, op.reuse, op.twin, op.__call__, GraphSegmenter.predict = saved


def main(argv=None) -> None:
    import numpy as np
    import torch

    from anatomix.batch import QCHook, segment_batch
    from anatomix.data.cases import labelled_cases, split_cases
    from anatomix.io import read_radiograph
    from anatomix.models import load_segmenter
    from anatomix.qc import QC_COLUMNS, assess, load_references
    from anatomix.qc.assess import _flip_model
    from anatomix.qc.orientation import flip_gain, lungs_heart_landmarks
    from anatomix.qc.rca import (
        DEFAULT_REGISTRATION,
        LEGACY_REGISTRATION,
        REGISTRATION_SIZE,
        rca,
    )
    from anatomix.qc.shape_model import default_shape_model
    from anatomix.qc.signals import SecondOpinion

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="end-to-end rounds (median reported)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cases = split_cases(labelled_cases(args.data))[1]
    cases = cases[:: max(1, len(cases) // args.n)][: args.n]
    model = load_segmenter("refined")
    model.uncertainty_samples = 10  # what `anatomix segment` sets when QC is on
    films = [read_radiograph(c.image) for c in cases]
    segs = [model.predict([r])[0] for r in films]
    refs = load_references(None)
    opinion = SecondOpinion.bundled()
    sm = default_shape_model()
    old = dict(references=refs, k=args.k, registration=LEGACY_REGISTRATION)
    new = dict(references=refs, k=args.k, registration=DEFAULT_REGISTRATION)
    for s, r in zip(segs[:2], films[:2]):  # warm-up: loads every model once
        assess(s, r.pixels, segmenter=model, **new)
        with before():
            assess(s, r.pixels, segmenter=model, **old)

    def timed(fn):
        t = time.perf_counter()
        for r, s in zip(films, segs):
            fn(r, s)
        return (time.perf_counter() - t) / len(films)

    def both(fn_before, fn_after):
        """(before, after) s / film, film by film alternately (a shared machine's load falls on both)."""
        tb = ta = 0.0
        for r, s in zip(films, segs):
            with before():
                t = time.perf_counter()
                fn_before(r, s)
                tb += time.perf_counter() - t
            t = time.perf_counter()
            fn_after(r, s)
            ta += time.perf_counter() - t
        return tb / len(films), ta / len(films)

    model.uncertainty_samples = 0
    t_seg = timed(lambda r, s: model.predict([r]))
    model.uncertainty_samples = 10
    t_seg_draws = timed(lambda r, s: model.predict([r]))
    rows = {
        "QC of a mask set (`anatomix qc`: the second opinion runs)": both(
            lambda r, s: assess(s, r.pixels, **old), lambda r, s: assess(s, r.pixels, **new)),
        "QC in `anatomix segment` (+ mirrored-image test; second opinion reused after)": both(
            lambda r, s: assess(s, r.pixels, segmenter=model, **old),
            lambda r, s: assess(s, r.pixels, segmenter=model, **new)),
        "of which RCA": both(lambda r, s: rca(r.pixels, s.masks, refs, k=args.k, registration=LEGACY_REGISTRATION),
                             lambda r, s: rca(r.pixels, s.masks, refs, k=args.k)),
        "of which second opinion, `anatomix qc` (run on the film)": both(
            lambda r, s: opinion(r), lambda r, s: opinion(r)),
        "of which second opinion, `anatomix segment` (run before, reused after)": both(
            lambda r, s: opinion(r), lambda r, s: opinion.reuse(s, model, r)),
        "of which mirrored-image test, `anatomix segment`": both(
            lambda r, s: flip_gain(_flip_model(model, None), r.pixels, lungs_heart_landmarks(s), sm),
            lambda r, s: flip_gain(_flip_model(model, None), r.pixels, lungs_heart_landmarks(s), sm)),
    }
    # end to end: segment_batch on the films' files, one thread
    paths = [str(c.image) for c in cases]

    def run_segment(qc, draws):
        model.uncertainty_samples = draws
        with tempfile.TemporaryDirectory() as tmp:
            summary = segment_batch(paths, tmp, model, workers=0, qc=qc)
        if summary.segmented != len(paths) or summary.qc_failures:
            raise SystemExit(f"segment_batch: {summary.line()}")
        return summary.seconds / len(paths)

    runs: dict = {"off": [], "before": [], "after": []}
    for _ in range(args.rounds):  # rounds of off, before, after; the median of each is reported
        runs["off"].append(run_segment(False, 0))
        with before():
            runs["before"].append(run_segment(QCHook(tuple(QC_COLUMNS), partial(assess, **old)), 10))
        runs["after"].append(run_segment(True, 10))
    e2e_off, e2e_before, e2e_after = (float(np.median(runs[k])) for k in ("off", "before", "after"))

    cmd = " ".join(["python", "bench/qc_speed.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# QC cost per image, before and after (issue 16, item 4)", "",
        f"`OMP_NUM_THREADS=1 {cmd}`: {len(films)} validation films (512 px), one CPU thread (shared "
        f"2-core machine), k = {args.k} references, references and Dice in the {REGISTRATION_SIZE}-px frame.", "",
        f"- before: {LEGACY_REGISTRATION.describe()}; second opinion always run on the film; "
        "mirrored-image test by the segmenter with its 10 draws; holes by `binary_fill_holes`, counted twice; "
        "graph convolutions by torch_geometric's sparse propagation, latent draws with their own encoder pass",
        f"- after: {DEFAULT_REGISTRATION.describe()}; second opinion reused from a `refined` "
        "segmentation, mirrored-image test without draws; holes by one labelling, counted once; graph "
        "convolutions as dense products (`FixedGraphChebConv`), draws from the mean's encoder pass", "",
        "| stage | before s / image | after s / image | before images / s | after images / s | speed-up |",
        "|---|---|---|---|---|---|"]
    for name, (b, a) in rows.items():
        lines.append(f"| {name} | {b:.3f} | {a:.3f} | {1 / b:.2f} | {1 / a:.2f} | {b / a:.1f}x |")
    lines += ["", f"Segmentation alone (`refined`): {t_seg:.3f} s / image; with the 10 uncertainty draws "
              f"`anatomix segment` adds when QC is on: {t_seg_draws:.3f} s.", "",
              f"`segment_batch` end to end (`workers=0`; reading, segmentation, writing the masks and the "
              f"CSV row, QC; median of {args.rounds} rounds of off / before / after):", "",
              "| run | s / image | images / s |", "|---|---|---|",
              f"| QC off (no draws) | {e2e_off:.3f} | {1 / e2e_off:.2f} |",
              f"| QC on, before | {e2e_before:.3f} | {1 / e2e_before:.2f} |",
              f"| QC on, after | {e2e_after:.3f} | {1 / e2e_after:.2f} |", "",
              f"QC's own cost in `segment` (QC on minus QC off): before {e2e_before - e2e_off:.3f} s, after "
              f"{e2e_after - e2e_off:.3f} s per image ({(e2e_before - e2e_off) / (e2e_after - e2e_off):.1f}x).",
              ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
