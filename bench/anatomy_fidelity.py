"""How faithfully the anatomy template turns contours into masks and back, on real JSRT cases.

Two checks over every JSRT case of the data pack that has landmarks (512 x 512 frame):

* ``landmarks vs SCR``: rasterise each structure of the 166 landmarks
  (:func:`anatomix.anatomy.rasterize`) and compare it with the SCR manual mask (Dice).
* ``mask round trip``: trace the SCR mask into a template contour
  (:func:`anatomix.anatomy.mask_to_contour`, the structure's node count), rasterise it again and
  compare with the SCR mask (Dice).

The landmarks were derived from these masks by the HybridGNet authors, so the first check measures
the rasteriser and the template, not the annotators. Usage::

    python bench/anatomy_fidelity.py [DATA_ROOT]   # default ../shared/data or $ANATOMIX_DATA
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from anatomix.anatomy import FULL, dice, mask_to_contour, rasterize

CHECKS = ("landmarks vs SCR", "mask round trip")
DEFAULT_ROOT = Path(os.environ.get("ANATOMIX_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

Scores = dict[str, dict[str, list[tuple[str, float]]]]
"""check -> structure key -> [(case id, Dice), ...]"""


class Summary(NamedTuple):
    check: str
    structure: str
    n: int
    min: float
    mean: float
    worst: str


def jsrt_cases(data_root: Path) -> list[str]:
    """Ids of the JSRT cases with landmarks, from ``cxr-seg/manifest.csv``."""
    with open(data_root / "cxr-seg" / "manifest.csv", newline="") as f:
        return [r["id"] for r in csv.DictReader(f) if r["source"] == "jsrt" and r["has_landmarks"] == "1"]


def load_case(jsrt_dir: Path, case_id: str, keys: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(166, 2) landmarks (x, y) and {structure key: (512, 512) bool SCR mask} of one case."""
    landmarks = np.load(jsrt_dir / f"{case_id}_landmarks.npy")
    masks = {k: np.asarray(Image.open(jsrt_dir / f"{case_id}_{k}.png")) > 0 for k in keys}
    return landmarks, masks


def fidelity(data_root: Path, keys: Sequence[str] = FULL.keys) -> Scores:
    """Dice of both checks for the given structures of every JSRT case."""
    scores: Scores = {c: {k: [] for k in keys} for c in CHECKS}
    jsrt_dir = data_root / "cxr-seg" / "jsrt"
    for case_id in jsrt_cases(data_root):
        landmarks, masks = load_case(jsrt_dir, case_id, keys)
        contours = FULL.split(landmarks)
        for key in keys:
            scr, contour = masks[key], contours[key]
            traced = mask_to_contour(scr, key)
            scores[CHECKS[0]][key].append((case_id, dice(rasterize(contour, scr.shape), scr)))
            scores[CHECKS[1]][key].append((case_id, dice(rasterize(traced, scr.shape), scr)))
    return scores


def summarize(scores: Scores) -> list[Summary]:
    """One row per (check, structure): case count, min and mean Dice, id of the worst case."""
    rows = []
    for check, by_key in scores.items():
        for key, pairs in by_key.items():
            values = np.array([d for _, d in pairs])
            worst = int(np.argmin(values))
            rows.append(Summary(check, key, len(values), float(values.min()), float(values.mean()),
                                pairs[worst][0]))
    return rows


def format_table(rows: Sequence[Summary]) -> str:
    """A Markdown table of :func:`summarize` rows."""
    lines = ["| check | structure | cases | min Dice | mean Dice | worst case |",
             "|---|---|---:|---:|---:|---|"]
    lines += [f"| {r.check} | {r.structure} | {r.n} | {r.min:.4f} | {r.mean:.4f} | {r.worst} |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    root = Path(argv[0]) if argv else DEFAULT_ROOT
    if not (root / "cxr-seg" / "manifest.csv").is_file():
        print(f"data pack not found at {root}", file=sys.stderr)
        return 1
    print(format_table(summarize(fidelity(root))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
