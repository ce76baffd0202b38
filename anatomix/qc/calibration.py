"""Masks of known quality, and their signals: the table a :class:`~anatomix.qc.quality.DiceModel`
is fitted and validated on.

For every labelled case (image + radiologists' masks) many mask sets are made whose true Dice is
known:

- **model masks** (``makers``): each segmenter's masks of the image, e.g. the bundled graph,
  pixel and refined models, checkpoints trained on one collection only (off-domain on the
  others), and :func:`weight_noise_copy` stand-ins for weak, under-trained checkpoints;
- **degraded films** (:data:`DEGRADATIONS`, :func:`degrade_image`): the same models on a damaged
  copy of the film (noise, blur, low resolution, an opaque box over the chest, very low
  exposure); QC then sees the damaged film too, as it would in practice; optionally
  (``heavy_per_case``) a film drowned in noise (:data:`HEAVY_DEGRADATIONS`), stronger than the
  others (measured, not in the bundled table: ``bench/results/qc_issue16.md``);
- **perturbed truth** (:data:`PERTURBATIONS`, :func:`perturb_truth`): shifted, eroded, dilated,
  cut or island-added copies of the radiologists' masks (masks "made elsewhere").

For each mask set the per-structure :data:`~anatomix.qc.signals.SIGNALS` are computed against one
or more second opinions (:class:`~anatomix.qc.signals.SecondOpinion`, e.g. the bundled pair, and
a pair trained on one collection only that is off-domain on the others, as the bundled pair is on a
new hospital's films), and RCA per structure with one registration per film
(:func:`anatomix.qc.rca.reference_dice`).

One row per (case, film variant, mask set, opinion, structure) that the case labels: see
:data:`ROW_KEYS`.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from anatomix.anatomy import STRUCTURE_KEYS, dice
from anatomix.qc.signals import (
    FEATURES,
    SIGNALS,
    SecondOpinion,
    feature_value,
    mask_signals,
    with_opinion,
)

PERTURBATIONS = ("shift", "erode", "dilate", "cut", "island")
DEGRADATIONS = ("noise", "blur", "lowres", "box", "dark")
HEAVY_DEGRADATIONS = ("noise_heavy",)
"""Degradations beyond :data:`DEGRADATIONS`, drawn with their own seed (so adding them leaves the
other films and perturbations of a case as they were)."""
ROW_KEYS = ("case", "collection", "film", "kind", "opinion", "structure", "dice", "hard_fail", *SIGNALS)
"""Columns of a calibration row. ``film``: ``clean`` or a degradation; ``kind``: the mask set's
maker or perturbation; ``hard_fail``: the mask SET has a hard plausibility failure
(:func:`anatomix.qc.verdict.hard_failures`)."""


def perturb_truth(truth: Mapping[str, np.ndarray], kind: str, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """A perturbed copy of a case's masks; magnitude drawn from ``rng``.

    ``shift``: every structure moved by 2-15 % of the width in one random direction; ``erode`` /
    ``dilate``: by 0.5-4.5 % of the width; ``cut``: one random structure loses its lower 10-60 %;
    ``island``: a disc of radius 3-10 % of the width added to one random structure.
    """
    from scipy import ndimage

    keys = list(truth)
    h, w = next(iter(truth.values())).shape
    u = rng.uniform()
    out = {k: np.asarray(truth[k], bool).copy() for k in keys}
    if kind == "shift":
        d = (0.02 + 0.13 * u) * w
        a = rng.uniform(0, 2 * np.pi)
        return {k: ndimage.shift(m.astype(np.uint8), (d * np.sin(a), d * np.cos(a)), order=0) > 0
                for k, m in out.items()}
    if kind in ("erode", "dilate"):
        r = (0.005 + 0.04 * u) * w
        if kind == "erode":
            return {k: ndimage.distance_transform_edt(m) > r for k, m in out.items()}
        return {k: ndimage.distance_transform_edt(~m) <= r for k, m in out.items()}
    k = keys[rng.integers(len(keys))]
    if kind == "cut":
        rows = np.flatnonzero(out[k].any(axis=1))
        if rows.size:
            out[k][int(rows[-1] - (0.1 + 0.5 * u) * (rows[-1] - rows[0])):] = False
        return out
    if kind == "island":
        r = (0.03 + 0.07 * u) * w
        yy, xx = np.mgrid[:h, :w]
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        out[k] = out[k] | (np.hypot(yy - cy, xx - cx) <= r)
        return out
    raise ValueError(f"unknown perturbation {kind!r}")


def degrade_image(pixels: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A damaged copy of an (H, W) [0, 1] film; magnitude drawn from ``rng``.

    ``noise``: Gaussian, sd 0.1-0.4; ``noise_heavy``: Gaussian, sd 0.4-1.0; ``blur``: Gaussian,
    sigma 1-4 % of the width; ``lowres``: down to 16-48 px and back; ``box``: an opaque (white) box over 20-45 % of the chest width,
    at a random place in the central region; ``dark``: gamma 2.5-5 (under-exposed).
    """
    from scipy import ndimage

    p = np.asarray(pixels, np.float32)
    h, w = p.shape
    u = rng.uniform()
    if kind == "noise":
        out = p + rng.normal(0, 0.1 + 0.3 * u, p.shape)
    elif kind == "noise_heavy":
        out = p + rng.normal(0, 0.4 + 0.6 * u, p.shape)
    elif kind == "blur":
        out = ndimage.gaussian_filter(p, (0.01 + 0.03 * u) * w)
    elif kind == "lowres":
        side = int(16 + 32 * u)
        small = ndimage.zoom(p, side / max(h, w), order=1)
        out = ndimage.zoom(small, (h / small.shape[0], w / small.shape[1]), order=1)[:h, :w]
    elif kind == "box":
        bw, bh = int((0.2 + 0.25 * u) * w), int((0.2 + 0.25 * rng.uniform()) * h)
        y0, x0 = int(rng.uniform(0.15, 0.7) * h), int(rng.uniform(0.1, 0.9) * w - bw / 2)
        out = p.copy()
        out[max(0, y0 - bh // 2): y0 + bh // 2, max(0, x0): x0 + bw] = 1.0
    elif kind == "dark":
        out = p ** (2.5 + 2.5 * u)
    else:
        raise ValueError(f"unknown degradation {kind!r}")
    return np.clip(out, 0, 1).astype(np.float32)


def weight_noise_copy(name_or_path: str, level: float, seed: int = 0):
    """A segmenter loaded from ``name_or_path`` with Gaussian noise of ``level`` times each weight
    tensor's std added to it (a weak, under-trained stand-in); ``seed`` makes it reproducible."""
    import torch

    from anatomix.models import load_segmenter

    seg = load_segmenter(name_or_path)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in seg.model.parameters():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=g) * float(level) * p.std())
    return seg


def hard_fail(masks: Mapping[str, np.ndarray]) -> bool:
    """Does the mask set have a hard plausibility failure (:func:`anatomix.qc.verdict.hard_failures`)?"""
    from anatomix.qc.plausibility import plausibility
    from anatomix.qc.verdict import hard_failures

    plaus = plausibility(masks)
    return bool(hard_failures(plaus, plaus))


def table_makers(graph_jsrt, pixel_jsrt) -> Tuple[Dict[str, object], List[str], Dict[str, SecondOpinion]]:
    """The makers of the committed calibration table, the ones also run on degraded films, and the
    two second opinions (bundled pair; JSRT-only pair, off-domain on Montgomery / Shenzhen).

    Args:
        graph_jsrt, pixel_jsrt: the JSRT-only checkpoints (see ``tools/build_qc_dice_model.py``).
    """
    from anatomix.models import load_segmenter
    from anatomix.refine import RefinedSegmenter

    graph, pixel = load_segmenter("graph"), load_segmenter("pixel")
    g_j, p_j = load_segmenter(graph_jsrt), load_segmenter(pixel_jsrt)
    makers = {"graph": graph, "pixel": pixel, "refined": RefinedSegmenter(graph, pixel),
              "graph_jsrt": g_j, "pixel_jsrt": p_j, "refined_jsrt": RefinedSegmenter(g_j, p_j),
              "graph_noise0.15": weight_noise_copy("graph", 0.15, 1),
              "graph_noise0.3": weight_noise_copy("graph", 0.3, 2),
              "pixel_noise0.05": weight_noise_copy("pixel", 0.05, 3),
              "pixel_noise0.1": weight_noise_copy("pixel", 0.1, 4)}
    degraded = ["graph", "pixel", "refined", "graph_jsrt", "pixel_jsrt", "refined_jsrt"]
    return makers, degraded, {"bundled": SecondOpinion(graph, pixel), "jsrt": SecondOpinion(g_j, p_j)}


def mask_sets(cases: Sequence, makers: Mapping[str, object], degrade_per_case: int = 2,
              degraded_makers: Optional[Sequence[str]] = None, heavy_per_case: int = 0) -> Iterator[tuple]:
    """The mask sets of known quality, film by film (arguments as :func:`known_quality_rows`).

    Yields:
        ``(case index, case, film name, Radiograph of the film, truth masks, {kind: mask set})``:
        every maker's masks on the clean film and the degraded makers' on each degraded one, and
        the perturbations of truth on the clean film. Seeded per case, so every caller sees the
        same films and masks.
    """
    from anatomix.data.mask_dataset import case_masks
    from anatomix.io import read_radiograph
    from anatomix.io.record import Radiograph

    degraded_makers = list(makers) if degraded_makers is None else list(degraded_makers)
    for i, case in enumerate(cases):
        r = read_radiograph(case.image)
        truth = case_masks(case, STRUCTURE_KEYS)
        keys = list(truth)
        rng = np.random.default_rng(i)
        films = {"clean": r.pixels}
        for kind in rng.choice(DEGRADATIONS, size=degrade_per_case, replace=False):
            films[str(kind)] = degrade_image(r.pixels, str(kind), rng)
        if heavy_per_case:
            heavy_rng = np.random.default_rng(10**6 + i)
            for kind in heavy_rng.choice(HEAVY_DEGRADATIONS, size=heavy_per_case, replace=False):
                films[str(kind)] = degrade_image(r.pixels, str(kind), heavy_rng)
        for film, pixels in films.items():
            rad = Radiograph(pixels, path=r.path)
            sets: Dict[str, Mapping[str, np.ndarray]] = {}
            for kind, maker in makers.items():
                if film == "clean" or kind in degraded_makers:
                    sets[kind] = {key: maker.predict([rad])[0].masks[key] for key in keys}
            if film == "clean":
                for kind in PERTURBATIONS:
                    sets[kind] = perturb_truth(truth, kind, rng)
            yield i, case, film, rad, truth, sets


def known_quality_rows(cases: Sequence, makers: Mapping[str, object], opinions: Mapping[str, SecondOpinion],
                       references=None, k: int = 4, degrade_per_case: int = 2,
                       degraded_makers: Optional[Sequence[str]] = None, heavy_per_case: int = 0,
                       progress: Optional[Callable[[str], None]] = None) -> List[dict]:
    """The calibration table of ``cases`` (see the module docstring).

    Args:
        cases: labelled cases (:class:`anatomix.data.cases.SegCase`); only their labelled
            structures among :data:`~anatomix.anatomy.STRUCTURE_KEYS` are scored.
        makers: {kind: segmenter} whose masks are scored.
        opinions: {name: second opinion} the signals are computed against.
        references: RCA references (default: bundled atlases); None-valued ``k=0`` skips RCA.
        k: RCA references per film (0: no RCA; the ``rca`` signal is NaN).
        degrade_per_case: degradations per case, drawn without replacement from
            :data:`DEGRADATIONS` (seeded by the case's index).
        degraded_makers: the makers also run on degraded films (default: all).
        heavy_per_case: further degraded films per case, drawn without replacement from
            :data:`HEAVY_DEGRADATIONS` with a seed of their own (10**6 + the case's index).
        progress: called with a line every 10 cases.

    Returns:
        rows (dicts with :data:`ROW_KEYS`).
    """
    from anatomix.qc.rca import load_references, reference_dice

    refs = load_references(references) if k > 0 else None
    rows: List[dict] = []
    t0 = time.perf_counter()

    def report(done: int) -> None:
        if progress is not None and done and done % 10 == 0:
            progress(f"{done}/{len(cases)} cases, {len(rows)} rows, {time.perf_counter() - t0:.0f} s")

    current = 0
    for i, case, film, rad, truth, sets in mask_sets(cases, makers, degrade_per_case, degraded_makers,
                                                     heavy_per_case):
        if i != current:  # case ``current`` is complete
            report(i)
            current = i
        keys = list(truth)
        rca = [None] * len(sets)
        if refs is not None:
            d = reference_dice(rad.pixels, list(sets.values()), refs, k)[2]  # (n_sets, k, C)
            rca = [{key: float(np.nanmean(d[j, :, c])) for c, key in enumerate(refs.keys) if key in keys}
                   for j in range(len(sets))]
        views = {name: op(rad) for name, op in opinions.items()}
        for (kind, masks), rca_j in zip(sets.items(), rca):
            fail = hard_fail(masks)
            own = mask_signals(masks, rca_j, keys)
            for name, view in views.items():
                sig = with_opinion(own, masks, view)
                for key in keys:
                    rows.append({"case": case.case_id, "collection": case.source, "film": film,
                                 "kind": kind, "opinion": name, "structure": key,
                                 "dice": dice(masks[key], truth[key]), "hard_fail": fail, **sig[key]})
    report(len(cases))
    return rows


def print_progress(line: str) -> None:
    """A :func:`known_quality_rows` progress callback that writes to stderr."""
    print(f"  {line}", file=sys.stderr, flush=True)


# -- the table on disk, the fit, and its leave-one-collection-out figures -----------------------
def write_rows(rows: Sequence[Mapping[str, object]], path) -> None:
    """Write calibration rows as CSV (``.gz``: compressed, no timestamp)."""
    import csv
    import gzip
    import io
    from pathlib import Path

    buf = io.StringIO()
    w = csv.DictWriter(buf, list(ROW_KEYS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in ROW_KEYS})
    data = buf.getvalue().encode()
    Path(path).write_bytes(gzip.compress(data, mtime=0) if str(path).endswith(".gz") else data)


def read_rows(path) -> List[dict]:
    """Read a table written by :func:`write_rows` (numbers as float, ``hard_fail`` as bool)."""
    import csv
    import gzip
    import io
    from pathlib import Path

    raw = Path(path).read_bytes()
    text = (gzip.decompress(raw) if str(path).endswith(".gz") else raw).decode()
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        row: dict = {k: r[k] for k in ("case", "collection", "film", "kind", "opinion", "structure")}
        row["dice"] = float(r["dice"])
        row["hard_fail"] = r["hard_fail"] == "True"
        row.update({s: float(r[s]) if r.get(s) not in (None, "", "nan") else float("nan") for s in SIGNALS})
        rows.append(row)
    return rows


def table_arrays(rows: Sequence[Mapping[str, object]], signals: Sequence[str] = FEATURES):
    """(features (n, len(signals)), dice (n,), collections (n,), hard_fail (n,), mask-set ids (n,));
    ``signals`` are feature names (:func:`anatomix.qc.signals.feature_value`: a signal, or ``a*b``)."""
    x = np.array([[feature_value(r, s) for s in signals] for r in rows], np.float64).reshape(len(rows), len(signals))
    y = np.array([r["dice"] for r in rows], np.float64)
    groups = np.array([r["collection"] for r in rows])
    hard = np.array([bool(r["hard_fail"]) for r in rows])
    ids = np.array([f"{r['case']}|{r['film']}|{r['kind']}|{r['opinion']}" for r in rows])
    return x, y, groups, hard, ids


def fit_dice_model(rows: Sequence[Mapping[str, object]], signals: Sequence[str] = FEATURES,
                   alpha: float = 1.0, meta: Optional[dict] = None):
    """The :class:`~anatomix.qc.quality.DiceModel` of all ``rows`` with its mask-set threshold."""
    from anatomix.qc.quality import DiceModel, choose_threshold, mask_means

    x, y, _, hard, ids = table_arrays(rows, signals)
    model = DiceModel.fit(x, y, list(signals), alpha)
    _, pred = mask_means(model.predict(x), ids)
    _, truth = mask_means(y, ids)
    _, fail = mask_means(hard.astype(float), ids)
    model.threshold = choose_threshold(pred, truth, fail > 0)
    model.meta = dict(meta or {}, rows=len(rows), collections=sorted(set(str(r["collection"]) for r in rows)))
    return model


def _pct(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{100 * v:.0f} %"


def _num(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{v:.3f}"


def origin(row: Mapping[str, object]) -> str:
    """Where a row's mask comes from: ``perturbed truth``, ``degraded film`` or ``model``."""
    if row["kind"] in PERTURBATIONS:
        return "perturbed truth"
    return "model, degraded film" if row["film"] != "clean" else "model, clean film"


def loco_markdown(rows: Sequence[Mapping[str, object]], signals: Sequence[str] = FEATURES) -> str:
    """Leave-one-collection-out figures of the predicted Dice as markdown tables: per held-out
    collection over all its mask sets, then by second opinion, by mask origin, and over the mask
    sets with true Dice >= 0.5 (r without the near-zero masks of broken models)."""
    from anatomix.qc.quality import (
        FAILED_BELOW,
        GOOD_FROM,
        loco_evaluate,
        mask_means,
        pass_rates,
        pearson,
    )

    x, y, groups, hard, ids = table_arrays(rows, signals)
    results = loco_evaluate(x, y, groups, list(signals), hard, mask_ids=ids)
    head = ("| held out | subset | mask sets | failed | good | Pearson r | failed flagged | good passed | threshold |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [f"Failed: true Dice < {FAILED_BELOW}; good: >= {GOOD_FROM}.", "", head]
    for res in results:
        te = np.flatnonzero(groups == res.held_out)
        set_ids, _ = mask_means(y[te], ids[te])
        first = {}
        for j in te:
            first.setdefault(ids[j], j)
        subsets = {"all": np.ones(len(set_ids), bool)}
        for vals in ([f"opinion {rows[first[i]]['opinion']}" for i in set_ids],
                     [origin(rows[first[i]]) for i in set_ids]):
            for v in sorted(set(vals)):
                subsets[v] = np.array(vals) == v
        _, d_te = mask_means(y[te], ids[te])
        _, h_te = mask_means(hard[te].astype(float), ids[te])
        subsets["true Dice >= 0.5 (no broken model)"] = d_te >= 0.5
        for label, s in subsets.items():
            flag, keep = pass_rates(res.pred[s], d_te[s], res.threshold, h_te[s] > 0)
            lines.append(f"| {res.held_out} | {label} | {s.sum()} | {(d_te[s] < FAILED_BELOW).sum()} | "
                         f"{(d_te[s] >= GOOD_FROM).sum()} | {_num(pearson(res.pred[s], d_te[s]))} | "
                         f"{_pct(flag)} | {_pct(keep)} | {res.threshold:.3f} |")
    return "\n".join(lines)
