"""``anatomix evaluate`` on a labelled folder whose references are known exactly."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from anatomix.cli.evaluate import evaluate
from anatomix.io import read_radiograph, write_mask_png

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"


def test_evaluate_scores_reference_masks(tmp_path):
    """References = the bundled model's own masks (Dice 1), except one heart cut in half."""
    from anatomix.models import load_segmenter

    segmenter = load_segmenter("graph")
    sources = sorted(EXAMPLES.glob("pediatric_*.png"))[:2]
    for src in sources:
        shutil.copy(src, tmp_path / src.name)
        seg = segmenter.predict([read_radiograph(src)])[0]
        for key, mask in seg.masks.items():
            if src == sources[1] and key == "heart":
                mask = mask.copy()
                rows = np.flatnonzero(mask.any(axis=1))
                mask[: (rows[0] + rows[-1]) // 2] = False  # the top half of the heart
            write_mask_png(tmp_path / f"{src.stem}_{key}.png", mask)
    out = tmp_path / "eval.csv"
    r = CliRunner().invoke(evaluate, ["--model", "graph", "--data", str(tmp_path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "| folder | lungR | 2 |" in r.output and "self-intersecting contours: 0 of 6" in r.output
    rows = {(row["image_id"], row["structure"]): float(row["dice"]) for row in csv.DictReader(open(out))}
    assert len(rows) == 6
    cut = (sources[1].stem, "heart")
    assert all(d == 1.0 for k, d in rows.items() if k != cut)
    assert 0.2 < rows[cut] < 0.95


def test_topology_errors_flag_split_and_holed_masks():
    from anatomix.anatomy import LUNGS_HEART, landmarks_to_masks
    from anatomix.evaluation import evaluate_case, summarise, topology_errors
    from anatomix.segmentation import Segmentation

    def ring(cx, cy, r, n):
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(-t)], axis=1)

    xy = np.concatenate([ring(30, 50, 15, 44), ring(70, 50, 15, 50), ring(50, 70, 10, 26)])
    masks = landmarks_to_masks(xy, (100, 100), LUNGS_HEART)
    clean = Segmentation("a", None, (100, 100), LUNGS_HEART, xy, masks)
    assert not any(topology_errors(clean).values())
    broken = dict(masks)
    broken["lungR"] = masks["lungR"].copy()
    broken["lungR"][48:53, :] = False  # cut in two
    broken["lungL"] = masks["lungL"].copy()
    broken["lungL"][49:52, 69:72] = False  # a hole
    seg = Segmentation("a", None, (100, 100), LUNGS_HEART, xy, broken)
    assert topology_errors(seg) == {"lungR": True, "lungL": True, "heart": False}
    rows = [{"source": "s", **r} for r in evaluate_case(seg, masks, None, None)]
    assert {s["structure"]: s["topology_errors"] for s in summarise(rows)} == {"lungR": 1, "lungL": 1, "heart": 0}


def test_summary_gives_the_hd95_median_beside_a_mean_carried_by_one_case():
    from anatomix.evaluation import Evaluation, summarise

    rows = [{"source": "s", "structure": "lungL", "dice": 0.9, "hd95_px": hd, "hd95_mm": np.nan} for hd in (1.0, 2.0, 99.0)]
    rows.append({"source": "s", "structure": "lungL", "dice": 0.0, "hd95_px": np.nan, "hd95_mm": np.nan})  # empty mask
    (summary,) = summarise(rows)
    assert summary["hd95_px"] == 34.0 and summary["hd95_px_median"] == 2.0
    assert "| 34.00 (2.00) |" in Evaluation(rows, [summary], 4, 0, 4).table()
