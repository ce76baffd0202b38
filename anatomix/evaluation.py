"""Segmentation quality against references: Dice, HD95 (px and mm), landmark error.

Metrics come from MONAI (``DiceMetric``, ``HausdorffDistanceMetric`` with percentile 95)
on masks in the original frame of each radiograph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from anatomix.segmentation import Segmentation

JSRT_MM_PER_PX_2048 = 0.175
"""JSRT detector pitch at the native 2048 x 2048 resolution."""


def case_spacing(meta: Dict[str, str]) -> Optional[float]:
    """Pixel spacing (mm) of a pack case from its manifest row (JSRT only), else None."""
    if meta.get("source") == "jsrt":
        return JSRT_MM_PER_PX_2048 * float(meta["orig_width"]) / float(meta["width"])
    return None


def per_source_scores(dices: Dict[tuple, List[float]]) -> Dict[str, float]:
    """Validation metrics over several sources with partial labels.

    Args:
        dices: {(source, structure): Dice of every case of that source that labels it}.

    Returns:
        ``dice_<structure>`` (over all cases), ``dice_<source>_<structure>``, and ``score``:
        the mean over (source, structure) pairs, so that every collection weighs the same
        whatever its size.
    """
    metrics: Dict[str, float] = {}
    for key in sorted({k for _, k in dices}):
        metrics[f"dice_{key}"] = float(np.mean([d for (_, k), v in dices.items() if k == key for d in v]))
    for (source, key), v in sorted(dices.items()):
        metrics[f"dice_{source}_{key}"] = float(np.mean(v))
    metrics["score"] = float(np.mean([np.mean(v) for v in dices.values()]))
    return metrics


def mask_metrics(pred: np.ndarray, true: np.ndarray, spacing: Optional[float]) -> Dict[str, float]:
    """Dice and HD95 of two (H, W) bool masks (HD95 in px, and in mm when spacing is known)."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    p = torch.from_numpy(np.asarray(pred, bool))[None, None].float()
    t = torch.from_numpy(np.asarray(true, bool))[None, None].float()
    out = {"dice": float(compute_dice(p, t, include_background=True, ignore_empty=False)[0, 0])}
    if p.sum() > 0 and t.sum() > 0:
        hd = float(compute_hausdorff_distance(p, t, include_background=True, percentile=95)[0, 0])
    else:
        hd = float("nan")
    out["hd95_px"] = hd
    out["hd95_mm"] = hd * spacing if spacing else float("nan")
    return out


def topology_errors(seg: Segmentation) -> Dict[str, bool]:
    """{structure: True when its mask is not exactly one component without holes, or its
    contour crosses itself} for every structure of ``seg.masks``."""
    from anatomix.qc.plausibility import plausibility

    p = plausibility(seg.masks, seg.landmarks, seg.template)
    return {k: p["components"][k] != 1 or p["holes"][k] > 0 or k in p["self_intersecting"] for k in seg.masks}


def evaluate_case(seg: Segmentation, true_masks: Dict[str, np.ndarray],
                  true_landmarks: Optional[np.ndarray], spacing: Optional[float]) -> List[Dict]:
    """One row per structure that both have: image_id, structure, dice, hd95_px, hd95_mm,
    topology_error (see :func:`topology_errors`), landmark_px (with reference landmarks)."""
    rows = []
    slices = seg.template.slices()
    topology = topology_errors(seg)
    for key in seg.template.keys:
        if key not in true_masks or key not in seg.masks:
            continue
        row = {"image_id": seg.image_id, "structure": key,
               **mask_metrics(seg.masks[key], true_masks[key], spacing), "topology_error": topology[key]}
        if true_landmarks is not None and seg.landmarks is not None:
            d = np.linalg.norm(seg.landmarks[slices[key]] - true_landmarks[slices[key]], axis=1)
            row["landmark_px"] = float(d.mean())
        rows.append(row)
    return rows


def _finite(stat, values: np.ndarray) -> float:
    """``stat`` (np.mean, np.median) over the finite values; NaN (without a warning) when there are none."""
    finite = values[np.isfinite(values)]
    return float(stat(finite)) if finite.size else float("nan")


def summarise(rows: Sequence[Dict]) -> List[Dict]:
    """Per source (when rows say it) and structure: n, mean / std / min of Dice, mean HD95
    (px, mm) and its median over cases (px; a mean HD95 can be carried by a few cases), mean
    landmark error, number of topological errors."""
    out = []
    for source, key in dict.fromkeys((r.get("source", ""), r["structure"]) for r in rows):
        sel = [r for r in rows if r["structure"] == key and r.get("source", "") == source]
        col = lambda name: np.array([r.get(name, np.nan) for r in sel], dtype=float)  # noqa: E731
        dice = col("dice")
        out.append({"source": source, "structure": key, "n": len(sel),
                    "dice_mean": _finite(np.mean, dice), "dice_std": float(np.std(dice)), "dice_min": float(dice.min()),
                    "hd95_px": _finite(np.mean, col("hd95_px")), "hd95_px_median": _finite(np.median, col("hd95_px")),
                    "hd95_mm": _finite(np.mean, col("hd95_mm")),
                    "landmark_px": _finite(np.mean, col("landmark_px")),
                    "topology_errors": int(sum(bool(r.get("topology_error")) for r in sel))})
    return out


@dataclass
class Evaluation:
    """A model's results on labelled cases (what ``anatomix evaluate`` prints and writes).

    Attributes:
        rows: one dict per case and structure (:func:`evaluate_case` plus ``source``).
        summary: :func:`summarise` of ``rows`` (per source and structure).
        n_cases: cases evaluated.
        crossed: self-intersecting contours among ``n_contours``.
        n_contours: cases x template structures.
    """

    rows: List[Dict]
    summary: List[Dict]
    n_cases: int
    crossed: int
    n_contours: int

    def table(self) -> str:
        """The summary as a Markdown table."""
        lines = ["| source | structure | n | Dice mean ± sd | Dice min | HD95 px mean (median) | HD95 mm "
                 "| landmark px | topological errors |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {s['source']} | {s['structure']} | {s['n']} | {s['dice_mean']:.4f} ± {s['dice_std']:.4f} | "
                  f"{s['dice_min']:.4f} | {s['hd95_px']:.2f} ({s['hd95_px_median']:.2f}) | {s['hd95_mm']:.2f} "
                  f"| {s['landmark_px']:.2f} | {s['topology_errors']} |" for s in self.summary]
        return "\n".join(lines)

    def write_csv(self, path) -> None:
        """``rows`` as a CSV, written atomically."""
        import csv

        from anatomix.io.atomic import atomic_write

        with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in self.rows for k in r)))
            w.writeheader()
            w.writerows(self.rows)


def evaluate_model(segmenter, cases: Sequence, spacing: Optional[float] = None,
                   progress: bool = True) -> Evaluation:
    """Segment every labelled case and score it against its masks (and landmarks when it has them).

    Args:
        segmenter: a :class:`~anatomix.segmentation.Segmenter`.
        cases: :class:`~anatomix.data.cases.SegCase` list (e.g. ``split_cases(labelled_cases(root))[1]``).
        spacing: pixel spacing in mm where a case's manifest does not give it (None: px only).
        progress: a tqdm bar on stderr.
    """
    from tqdm.auto import tqdm

    from anatomix.anatomy import contour_self_intersects
    from anatomix.data.datasets import case_landmarks
    from anatomix.io import read_mask, read_radiograph

    template = segmenter.template
    rows, crossed = [], 0
    for case in tqdm(cases, desc="evaluate", unit="image", disable=not progress):
        seg = segmenter.predict([read_radiograph(case.image)])[0]
        truth = {k: read_mask(p) for k, p in case.masks.items()}
        landmarks = case_landmarks(case, template) if case.landmarks is not None else None
        rows += [{"source": case.source, **row}
                 for row in evaluate_case(seg, truth, landmarks, case_spacing(case.meta) or spacing)]
        crossed += sum(contour_self_intersects(c) for c in template.split(seg.landmarks).values())
    return Evaluation(rows, summarise(rows), len(cases), crossed, len(cases) * len(template.structures))

