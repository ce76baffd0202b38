"""Plausibility checks, shape model and verdict on hand-built masks (no data pack needed)."""

from __future__ import annotations

import numpy as np
import pytest

from anatomix.anatomy import LUNGS_HEART, landmarks_to_masks
from anatomix.qc import QC_COLUMNS, assess
from anatomix.qc.orientation import heart_offset
from anatomix.qc.plausibility import (
    cardiothoracic_ratio,
    count_components,
    count_holes,
    intensity_contrast,
    plausibility,
    position_checks,
)
from anatomix.qc.rca import load_references
from anatomix.qc.shape_model import ShapeModel, default_shape_model
from anatomix.qc.verdict import Thresholds, verdict
from anatomix.segmentation import Segmentation

S = 256


def _rect(y0, y1, x0, x1, shape=(S, S)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture(scope="module")
def good():
    """A plausible case: the first bundled atlas at 256 px (image, masks, landmarks)."""
    refs = load_references(None)
    img = np.kron(refs.images[0], np.ones((2, 2), np.float32))
    masks = {k: np.kron(refs.masks[0, i] >= 0.5, np.ones((2, 2), bool)) for i, k in enumerate(refs.keys)}
    from anatomix.anatomy import masks_to_landmarks

    return img, masks, masks_to_landmarks(masks, LUNGS_HEART)


def _seg(masks, landmarks=None):
    lm = np.zeros((0, 2)) if landmarks is None else landmarks
    return Segmentation("x", None, (S, S), LUNGS_HEART, lm, masks)


def test_components_and_holes_on_rectangles():
    m = _rect(20, 120, 20, 80)
    assert count_components(m) == 1 and count_holes(m) == 0
    two = m | _rect(150, 200, 20, 80)
    assert count_components(two) == 2
    holed = m.copy()
    holed[50:70, 40:60] = False
    assert count_holes(holed) == 1 and count_components(holed) == 1
    speck = m.copy()
    speck[200, 200] = True  # one pixel: below MIN_SPECK_FRACTION of the image, ignored
    assert count_components(speck) == 1


def test_count_holes_is_what_binary_fill_holes_fills():
    """count_holes labels the background once; it counts what binary_fill_holes would fill."""
    from scipy import ndimage

    def by_fill(m, min_size):
        lab, n = ndimage.label(ndimage.binary_fill_holes(m) & ~m)
        return 0 if n == 0 else int((np.bincount(lab.ravel())[1:] >= min_size).sum())

    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = rng.integers(3, 90, 2)
        m = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 3)) > rng.uniform(0.45, 0.55)
        for min_size in (1, 4):
            assert count_holes(m, min_size) == by_fill(m, min_size)
    assert count_holes(np.zeros((5, 5), bool)) == 0 and count_holes(np.ones((5, 5), bool)) == 0


def test_ctr_and_positions_on_rectangles():
    masks = {"lungR": _rect(40, 200, 20, 110), "lungL": _rect(40, 200, 146, 236),
             "heart": _rect(120, 200, 100, 208)}
    assert cardiothoracic_ratio(masks) == pytest.approx(108 / 216)
    assert position_checks(masks) == {"lr_order_ok": True, "heart_inside_thorax": True, "heart_side_ok": True}
    swapped = {"lungR": masks["lungL"], "lungL": masks["lungR"], "heart": masks["heart"]}
    assert position_checks(swapped)["lr_order_ok"] is False
    outside = dict(masks, heart=_rect(5, 30, 230, 255))
    assert position_checks(outside)["heart_inside_thorax"] is False
    wrong_side = dict(masks, heart=_rect(120, 200, 60, 125))
    r = position_checks(wrong_side)
    assert r["heart_inside_thorax"] is True and r["heart_side_ok"] is False


def test_intensity_contrast_sign():
    masks = {"lungR": _rect(40, 200, 20, 110), "lungL": _rect(40, 200, 146, 236),
             "heart": _rect(120, 200, 100, 208)}
    img = np.full((S, S), 0.6, np.float32)
    img[masks["lungR"] | masks["lungL"]] = 0.1
    img[masks["heart"]] = 0.7
    assert intensity_contrast(img, masks) > 0.5
    assert intensity_contrast(1 - img, masks) < -0.5
    assert np.isnan(intensity_contrast(None, masks))


def test_good_case_passes(good):
    img, masks, lm = good
    row = assess(_seg(masks, lm), img, run_rca=False)
    assert list(row) == QC_COLUMNS
    assert row["qc_pass"] is True, row["qc_reasons"]
    assert row["n_components"] == 3 and row["n_holes"] == 0
    assert row["lr_order_ok"] and row["heart_inside_thorax"] and row["heart_side_ok"]
    assert row["shape_mahalanobis"] < default_shape_model().threshold
    assert row["heart_lung_contrast"] > 0.1


def _reasons(masks, img, lm=None):
    row = assess(_seg(masks, lm), img, run_rca=False)
    return row, row["qc_reasons"].split(";")


def test_hole_is_flagged(good):
    img, masks, _ = good
    holed = dict(masks)
    lung = holed["lungR"].copy()
    ys, xs = np.nonzero(lung)
    cy, cx = int(ys.mean()), int(xs.mean())
    lung[cy - 8:cy + 8, cx - 8:cx + 8] = False
    holed["lungR"] = lung
    row, reasons = _reasons(holed, img)
    assert row["qc_pass"] is False and "holes(lungR=1)" in reasons and row["n_holes"] == 1


def test_two_islands_are_flagged(good):
    img, masks, _ = good
    islands = dict(masks, lungL=masks["lungL"] | _rect(0, 10, S - 56, S - 16))  # above the apex
    row, reasons = _reasons(islands, img)
    assert row["qc_pass"] is False and "components(lungL=2)" in reasons and row["n_components"] == 4


def test_swapped_lungs_are_flagged(good):
    img, masks, _ = good
    row, reasons = _reasons({"lungR": masks["lungL"], "lungL": masks["lungR"], "heart": masks["heart"]}, img)
    assert row["qc_pass"] is False and "lungs_swapped" in reasons and row["lr_order_ok"] is False


def test_heart_outside_thorax_is_flagged(good):
    img, masks, _ = good
    row, reasons = _reasons(dict(masks, heart=_rect(2, 30, 2, 40)), img)
    assert row["qc_pass"] is False and "heart_outside_thorax" in reasons
    assert row["heart_inside_thorax"] is False


def test_missing_structure_is_flagged(good):
    img, masks, _ = good
    row, reasons = _reasons(dict(masks, heart=np.zeros_like(masks["heart"])), img)
    assert row["qc_pass"] is False and "missing(heart)" in reasons


def test_self_intersection_is_flagged(good):
    img, masks, lm = good
    bad = lm.copy()
    bad[[5, 25]] = bad[[25, 5]]  # two far-apart nodes of the right lung exchanged: the contour crosses
    row, reasons = _reasons(masks, img, bad)
    assert "lungR" in row["self_intersecting"] and "self_intersection(lungR)" in reasons


def test_shape_model_distance():
    sm = default_shape_model()
    mean = sm.mean.reshape(-1, 2) * 100 + 200
    assert sm.distance(mean) < 0.5
    assert sm.distance(mean * 3 + 7) == pytest.approx(sm.distance(mean), abs=1e-6)  # position/size free
    rotated = (mean - 200) @ np.array([[0.0, -1.0], [1.0, 0.0]]) + 200
    assert sm.distance(rotated) > sm.threshold
    rng = np.random.default_rng(0)
    assert sm.distance(mean + rng.normal(0, 15, mean.shape)) > sm.threshold
    batch = sm.distance(np.stack([mean, rotated]))
    assert batch.shape == (2,) and batch[0] < batch[1]


def test_shape_model_fit_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 100, (10, 2))
    data = base[None] + rng.normal(0, 1, (40, 10, 2))
    sm = ShapeModel.fit(data)
    assert np.isfinite(sm.threshold) and sm.distance(base) < sm.threshold
    sm.save(tmp_path / "s.npz")
    assert ShapeModel.load(tmp_path / "s.npz").distance(base) == pytest.approx(sm.distance(base))


def test_verdict_thresholds_without_a_predicted_dice():
    # no predicted Dice: every check fails the mask (the rule before the predicted Dice)
    ok, reasons, notes = verdict({"Dice RCA (Mean)": 0.69, "rca_similarity": 0.9})
    assert not ok and reasons == ["rca_low(0.69)"] and notes == []
    assert verdict({"Dice RCA (Mean)": 0.71, "rca_similarity": 0.9}) == (True, [], [])
    assert verdict({"Dice RCA (Mean)": float("nan")}) == (True, [], [])  # missing figures are skipped
    assert "unlike_references(0.30)" in verdict({"rca_similarity": 0.3})[1]
    assert verdict({"ctr": 0.9})[1] == ["ctr(0.90)"]
    assert verdict({"node_std_mean": 10.0}, image_side=512)[1] == ["uncertain(0.020)"]
    assert verdict({"node_std_mean": 10.0}, image_side=512, thresholds=Thresholds(node_std_max_fraction=0.05))[0]


def test_verdict_from_predicted_dice_and_hard_failures():
    soft = {"Dice RCA (Mean)": 0.5, "ctr": 0.9}
    # a high predicted Dice passes; the soft checks that fired are notes, not reasons
    ok, reasons, notes = verdict({"Predicted Dice": 0.95, **soft}, dice_threshold=0.85)
    assert ok and reasons == [] and notes == ["rca_low(0.50)", "ctr(0.90)"]
    # a low one fails with its value
    assert verdict({"Predicted Dice": 0.80}, dice_threshold=0.85)[:2] == (False, ["dice_low(0.80)"])
    # Thresholds.pred_dice_min overrides the model's own threshold
    assert verdict({"Predicted Dice": 0.80}, thresholds=Thresholds(pred_dice_min=0.75), dice_threshold=0.85)[0]
    # hard failures fail whatever the predicted Dice
    for fig, code in (({"lr_order_ok": False}, "lungs_swapped"), ({"heart_inside_thorax": False}, "heart_outside_thorax"),
                      ({"orientation_gain": 0.1}, "rotated"), ({"flip_gain": 1.0}, "mirrored(1.0)")):
        ok, reasons, _ = verdict({"Predicted Dice": 0.99, **fig}, dice_threshold=0.85)
        assert not ok and reasons == [code], (fig, reasons)
    plaus = {"components": {"lungR": 2, "heart": 0}, "holes": {"lungL": 1}, "area": {}, "self_intersecting": ["heart"]}
    ok, reasons, _ = verdict({"Predicted Dice": 0.99}, plaus, dice_threshold=0.85)
    assert not ok and reasons == ["components(lungR=2)", "missing(heart)", "holes(lungL=1)", "self_intersection(heart)"]


def test_image_and_masks_of_different_shapes_are_refused(good):
    from anatomix.errors import UsageError

    img, masks, _ = good
    with pytest.raises(UsageError, match=r"image shape \(128, 256\) differs from mask shape \(256, 256\)"):
        assess(_seg(masks), img[::2], run_rca=False)


def test_plausibility_without_image_or_landmarks(good):
    _, masks, _ = good
    p = plausibility(masks)
    assert p["self_intersecting"] == [] and np.isnan(p["heart_lung_contrast"])
    row = assess(_seg(masks), None)
    assert np.isnan(row["Dice RCA (Mean)"]) and row["qc_pass"] is True and row["rca_references"] == ""


class _FakeSegmenter:
    """Returns fixed landmarks for whatever image: stands in for a model in the flip test."""

    def __init__(self, landmarks):
        self.landmarks = landmarks

    def predict(self, radiographs):
        r = radiographs[0]
        return [Segmentation("f", None, r.shape, LUNGS_HEART, self.landmarks,
                             landmarks_to_masks(self.landmarks, r.shape))]


def test_flip_test_flags_mirrored_images(good):
    img, masks, lm = good
    sm = default_shape_model()
    typical = sm.mean.reshape(-1, 2) * 60 + 128
    odd = typical.copy()
    odd[94:120] += [-30, -40]  # the heart pushed up and to the image's left: a less typical result
    # the flipped image gives the less typical result: the image is the right way round
    row = assess(_seg(masks, typical), img, run_rca=False, segmenter=_FakeSegmenter(odd))
    assert row["flip_gain"] < 0 and "mirrored" not in row["qc_reasons"]
    # the flipped image gives the more typical result: flagged as mirrored
    row = assess(_seg(masks, odd), img, run_rca=False, segmenter=_FakeSegmenter(typical))
    assert row["flip_gain"] > 0 and "mirrored(" in row["qc_reasons"] and row["qc_pass"] is False
    assert np.isnan(assess(_seg(masks, typical), img, run_rca=False)["flip_gain"])  # no segmenter


def test_heart_offset_sign(good):
    _, _, lm = good
    assert 0.0 < heart_offset(lm) < 0.2
    mirrored = lm.copy()
    mirrored[:, 0] = 256 - mirrored[:, 0]
    assert heart_offset(mirrored) < 0
