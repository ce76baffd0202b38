"""Build the bundled predicted-Dice model (``anatomix/weights/qc_dice_model.json``) and its card.

1. Masks of known quality on our validation split of every labelled pack collection
   (``split_cases(labelled_cases(data))[1]``: JSRT, Montgomery, Shenzhen; cases the bundled
   segmenters never trained on), with their per-structure signals
   (:func:`anatomix.qc.calibration.known_quality_rows`):

   - makers: the bundled ``graph``, ``pixel``, ``refined``; the first JSRT-only graph and pixel
     checkpoints (``--graph-jsrt``/``--pixel-jsrt``, from git history: off-domain on Montgomery
     and Shenzhen) and their refined pair; weight-noise copies of the bundled graph (0.15, 0.3)
     and pixel (0.05, 0.1) models as weak checkpoints;
   - two degraded copies of each film (seeded per case) segmented by the graph, pixel and
     refined models (bundled and JSRT-only); with ``--heavy-noise 1`` a third drowned in noise
     (sd 0.4-1.0, its own seed; measured in ``bench/results/qc_issue16.md``, not in the bundled
     table);
   - five perturbations of the radiologists' masks;
   - second opinions: the bundled pair (what QC runs) and the JSRT-only pair (a second opinion
     that never saw Montgomery or Shenzhen, as the bundled pair never saw a new hospital).

2. Leave one collection out (:func:`anatomix.qc.quality.loco_evaluate`): the model AND its
   threshold are fitted on two collections and measured on the third; these figures go into
   the card.
3. The bundled model: fitted on all rows, threshold by :func:`anatomix.qc.quality.choose_threshold`
   on all mask sets (max of min(% failed flagged, % good passed)); ridge alpha 1, fixed before.

The RCA signal comes from :func:`anatomix.qc.rca.reference_dice` with its default registration
(:data:`anatomix.qc.rca.DEFAULT_REGISTRATION`); the model is only valid for the figures of the
registration it was fitted on, so a change of those settings means rebuilding the table
(``--rebuild``) and refitting.

Usage (about 12 min on one shared CPU thread; 30 min with the registration before issue 16's item 4)::

    git show 944e05d:anatomix/weights/hybridgnet_lungs_heart.pt > /tmp/qc16/graph_jsrt.pt
    git show 9bf9e7c:anatomix/weights/pixel_unet_lungs_heart.pt > /tmp/qc16/pixel_jsrt.pt
    OMP_NUM_THREADS=1 python tools/build_qc_dice_model.py --data ../shared/data \\
        --graph-jsrt /tmp/qc16/graph_jsrt.pt --pixel-jsrt /tmp/qc16/pixel_jsrt.pt \\
        --table bench/results/qc_calibration.csv.gz

``--table`` is written after step 1 (and read instead of rebuilding when it exists and
``--rebuild`` is not given); ``bench/qc_quality.py --table`` reads the same file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_rows(data: Path, graph_jsrt: str, pixel_jsrt: str, limit: int, k: int, heavy: int = 0):
    from anatomix.data.cases import labelled_cases, split_cases
    from anatomix.qc.calibration import known_quality_rows, print_progress, table_makers

    cases = split_cases(labelled_cases(data))[1]
    if limit:
        cases = cases[:: max(1, len(cases) // limit)][:limit]
    makers, degraded, opinions = table_makers(graph_jsrt, pixel_jsrt)
    return known_quality_rows(cases, makers, opinions, k=k, degrade_per_case=2, degraded_makers=degraded,
                              heavy_per_case=heavy, progress=print_progress)


def main(argv=None) -> None:
    from anatomix.models import WEIGHTS_DIR
    from anatomix.qc.calibration import (
        fit_dice_model,
        loco_markdown,
        read_rows,
        write_rows,
    )
    from anatomix.qc.quality import DICE_MODEL_FILE
    from anatomix.qc.rca import DEFAULT_REGISTRATION

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--graph-jsrt", required=True, help="JSRT-only graph checkpoint (git 944e05d)")
    ap.add_argument("--pixel-jsrt", required=True, help="JSRT-only pixel checkpoint (git 9bf9e7c)")
    ap.add_argument("--table", type=Path, required=True, help="calibration table (.csv or .csv.gz)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the table even if it exists")
    ap.add_argument("--limit", type=int, default=0, help="N validation cases (0: all; for a quick look)")
    ap.add_argument("--k", type=int, default=4, help="RCA references per film")
    ap.add_argument("--heavy-noise", type=int, default=0, choices=(0, 1),
                    help="1: a further film per case drowned in noise (not in the bundled table)")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder of the model and its card")
    args = ap.parse_args(argv)
    command = " ".join(["python", "tools/build_qc_dice_model.py"] + (argv if argv is not None else sys.argv[1:]))
    t = time.perf_counter()
    if args.table.is_file() and not args.rebuild:
        rows = read_rows(args.table)
    else:
        rows = build_rows(args.data, args.graph_jsrt, args.pixel_jsrt, args.limit, args.k, args.heavy_noise)
        write_rows(rows, args.table)
    model = fit_dice_model(rows, meta={"command": command, "table": str(args.table)})
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / DICE_MODEL_FILE)
    loco = loco_markdown(rows)
    card = CARD.format(command=command, n_rows=len(rows), threshold=model.threshold, loco=loco,
                       registration=DEFAULT_REGISTRATION.describe(), k=args.k,
                       weights="\n".join(f"| {n} | {m:.4g} | {s:.4g} | {c:+.4f} |" for n, m, s, c in
                                         zip(model.names, model.mean, model.scale, model.coef)),
                       intercept=model.intercept, seconds=time.perf_counter() - t)
    (args.out / DICE_MODEL_FILE.replace(".json", ".md")).write_text(card)
    print(card)


CARD = """# Predicted Dice per structure (`qc_dice_model.json`)

What it is: ridge regression (alpha 1, standardised features, output clipped to [0, 1]) of a
structure's true Dice on its QC signals and two products with the second opinion's own agreement
(`anatomix.qc.signals.FEATURES`: `agree*agree_pair`, `rca*agree_pair`; how much the agreement and
RCA are trusted depends on how sure the second opinion is). A mask set's predicted
Dice is the mean over its structures; it passes when that is >= the threshold below and it has no
hard plausibility failure (`anatomix.qc.verdict.hard_failures`).

Built by: `{command}` ({seconds:.0f} s this run; building the table when it is absent, or with
`--rebuild`, took 1268 s on one shared CPU thread (2026-12-03, with graph v4, the three-member pixel v3 and dense graph convolutions, beside another job), RCA with `anatomix.qc.rca.DEFAULT_REGISTRATION`:
{registration}, k = {k}; the table's 6 significant digits reproduce the weights to about 1e-8), {n_rows} rows (structures) of masks of known quality
made on our validation split of JSRT, Montgomery and Shenzhen (cases no bundled segmenter trained
on); makers, degradations, perturbations and second opinions: see `tools/build_qc_dice_model.py`.
Data terms: the pack's (research use; nothing of the images is stored here, only 9 x 4 numbers).

Threshold on a mask set's predicted Dice: **{threshold:.3f}**, chosen on all calibration mask sets
as the value that maximises min(% failed flagged, % good passed) (failed: true Dice < 0.8; good:
>= 0.93; both fixed before any fit). Never chosen on a held-out collection.

| feature | mean | scale | weight |
|---|---|---|---|
{weights}

Intercept {intercept:.4f}.

## Leave one collection out

The model and its threshold fitted on the other two collections only, measured on the held-out
one (mask sets: a case's mask from one maker, on one film, scored against one second opinion;
true Dice = mean over the structures the collection labels: lungs + heart on JSRT, lungs on
Montgomery and Shenzhen).

{loco}
"""


if __name__ == "__main__":
    main()
