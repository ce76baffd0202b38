"""Masks of known quality (anatomix.qc.calibration): perturbations, degraded films, the table on
disk, and the fit with its mask-set threshold."""

import numpy as np
import pytest

from anatomix.qc.calibration import (
    DEGRADATIONS,
    HEAVY_DEGRADATIONS,
    PERTURBATIONS,
    ROW_KEYS,
    degrade_image,
    fit_dice_model,
    hard_fail,
    perturb_truth,
    read_rows,
    write_rows,
)
from anatomix.qc.signals import FEATURES, SIGNALS


def _truth(S=120):
    m = {k: np.zeros((S, S), bool) for k in ("lungR", "lungL", "heart")}
    m["lungR"][20:90, 10:50] = True
    m["lungL"][20:90, 70:110] = True
    m["heart"][60:100, 45:80] = True
    return m


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_perturbations_are_seeded_and_change_the_masks(kind):
    from anatomix.anatomy import dice

    t = _truth()
    a = perturb_truth(t, kind, np.random.default_rng(5))
    b = perturb_truth(t, kind, np.random.default_rng(5))
    assert all(np.array_equal(a[k], b[k]) for k in t)
    # magnitudes and places are drawn: most draws change the masks (an island may land inside)
    changed = [min(dice(p[k], t[k]) for k in t) < 1.0
               for p in (perturb_truth(t, kind, np.random.default_rng(s)) for s in range(6))]
    assert sum(changed) >= 4


@pytest.mark.parametrize("kind", DEGRADATIONS + HEAVY_DEGRADATIONS)
def test_degraded_films_keep_shape_and_range(kind):
    rng = np.random.default_rng(0)
    px = rng.uniform(0, 1, (96, 80)).astype(np.float32)
    out = degrade_image(px, kind, np.random.default_rng(1))
    assert out.shape == px.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert not np.array_equal(out, px)
    assert np.array_equal(out, degrade_image(px, kind, np.random.default_rng(1)))


def test_hard_failures_of_mask_sets():
    t = _truth()
    assert not hard_fail(t)
    assert hard_fail({"lungR": t["lungL"], "lungL": t["lungR"], "heart": t["heart"]})  # sides swapped
    island = dict(t, lungL=t["lungL"].copy())
    island["lungL"][100:115, 100:115] = True
    assert hard_fail(island)  # two components


def _rows():
    rng = np.random.default_rng(0)
    rows = []
    for c, coll in enumerate(("a", "b")):
        for i in range(40):
            q = rng.uniform(0.5, 1.0)
            for key in ("lungR", "lungL"):
                d = float(np.clip(q + rng.normal(0, 0.01), 0, 1))
                sig = {s: float(rng.normal()) for s in SIGNALS}
                sig["agree"] = d + rng.normal(0, 0.005)
                sig["rca"] = float("nan") if i % 5 == 0 else d
                rows.append({"case": f"{coll}{i}", "collection": coll, "film": "clean", "kind": "graph",
                             "opinion": "bundled", "structure": key, "dice": d, "hard_fail": i == 3, **sig})
    return rows


def test_table_roundtrip_and_fit(tmp_path):
    rows = _rows()
    write_rows(rows, tmp_path / "t.csv.gz")
    back = read_rows(tmp_path / "t.csv.gz")
    assert len(back) == len(rows) and list(back[0]) == list(ROW_KEYS)
    assert back[3]["hard_fail"] is False and back[6]["hard_fail"] is True and np.isnan(back[0]["rca"])
    assert back[1]["dice"] == pytest.approx(rows[1]["dice"], abs=1e-5)
    model = fit_dice_model(back, meta={"command": "test"})
    assert model.names == list(FEATURES) and model.meta["rows"] == len(rows)
    assert model.meta["collections"] == ["a", "b"] and 0.8 < model.threshold < 0.93


def test_bundled_dice_model_is_the_fit_of_the_committed_table():
    """anatomix/weights/qc_dice_model.json is reproducible: fitting the committed calibration
    table (bench/results/qc_calibration.csv.gz, built by tools/build_qc_dice_model.py) gives the
    same weights and threshold, and the card names the command."""
    from pathlib import Path

    from anatomix.models import WEIGHTS_DIR
    from anatomix.qc.quality import DICE_MODEL_FILE, DiceModel

    table = Path(__file__).resolve().parents[2] / "bench" / "results" / "qc_calibration.csv.gz"
    if not table.is_file():
        pytest.skip(f"calibration table not found at {table}")
    bundled = DiceModel.load(WEIGHTS_DIR / DICE_MODEL_FILE)
    refit = fit_dice_model(read_rows(table))
    assert refit.names == bundled.names
    np.testing.assert_allclose(refit.coef, bundled.coef, atol=1e-6)
    np.testing.assert_allclose(refit.mean, bundled.mean, atol=1e-6)
    assert refit.intercept == pytest.approx(bundled.intercept, abs=1e-6)
    assert refit.threshold == pytest.approx(bundled.threshold, abs=1e-6)
    assert set(refit.meta["collections"]) == {"jsrt", "montgomery", "shenzhen"}
    card = (WEIGHTS_DIR / DICE_MODEL_FILE.replace(".json", ".md")).read_text()
    assert bundled.meta["command"] in card and "Leave one collection out" in card
