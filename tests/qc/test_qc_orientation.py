"""The rotation check passes upright films (adult PA, children's AP, films with wide borders)
and flags rotated ones."""

import csv
from pathlib import Path

import numpy as np
import pytest

from anatomix.io import read_radiograph
from anatomix.qc.orientation import film_orientation_gain
from anatomix.qc.rca import load_references
from anatomix.qc.verdict import DEFAULT_THRESHOLDS

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "images").glob("*.png"))
LIMIT = DEFAULT_THRESHOLDS.orientation_gain_max


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_films_upright_pass_and_rotated_are_flagged(path):
    refs = load_references(None)
    px = read_radiograph(path).pixels
    assert film_orientation_gain(px, refs) <= LIMIT
    for n in (1, 2, 3):
        assert film_orientation_gain(np.ascontiguousarray(np.rot90(px, n)), refs) > LIMIT, n


def test_upright_ap_films_of_children_and_other_hospitals_pass(data_root):
    """ZhangLab pediatric AP films (upstream test split: never used to choose the margin) and the
    Montgomery films with their wide borders: at least 97 % pass upright, 90 % are caught rotated."""
    refs = load_references(None)
    rows = list(csv.DictReader(open(data_root / "cxr-anomaly" / "manifest.csv", encoding="utf-8")))
    kids = [data_root / "cxr-anomaly" / "zhanglab" / f"{r['id']}.png" for r in rows
            if r["source"] == "zhanglab" and r["split_upstream"] == "test"]
    montgomery = sorted((data_root / "cxr-lungs" / "montgomery").glob("MCUCXR_*[0-9].png"))[::6]
    for name, paths in (("zhanglab", kids), ("montgomery", montgomery)):
        assert len(paths) >= 15, name
        films = [read_radiograph(p).pixels for p in paths]
        upright = np.array([film_orientation_gain(px, refs) for px in films])
        rotated = np.array([film_orientation_gain(np.ascontiguousarray(np.rot90(px, 1 + i % 3)), refs)
                            for i, px in enumerate(films)])
        assert (upright <= LIMIT).mean() >= 0.97, (name, np.sort(upright)[-3:])
        assert (rotated > LIMIT).mean() >= 0.9, (name, np.sort(rotated)[:3])
