"""The landmark template and contour <-> mask conversion, on hand-built shapes and on real JSRT cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.draw import ellipse, polygon2mask

from anatomix.anatomy import (
    FULL,
    LUNGS_HEART,
    STRUCTURE_BY_KEY,
    STRUCTURES,
    TEMPLATES,
    contour_self_intersects,
    dice,
    landmarks_to_masks,
    mask_to_contour,
    masks_to_landmarks,
    rasterize,
    resample_closed,
    signed_area,
)

BENCH = Path(__file__).resolve().parents[1] / "bench" / "anatomy_fidelity.py"
SQUARE = np.array([[2.0, 2.0], [5.0, 2.0], [5.0, 5.0], [2.0, 5.0]])
# a U: 6 x 6 square with a 2 x 4 notch cut from the top middle; area 28
U_SHAPE = np.array([[0, 0], [2, 0], [2, 4], [4, 4], [4, 0], [6, 0], [6, 6], [0, 6]], dtype=float)
FIGURE_EIGHT = np.array([[0.0, 0.0], [4.0, 4.0], [4.0, 0.0], [0.0, 4.0]])


def ellipse_mask(shape=(300, 260), center=(150, 120), radii=(95, 60), rotation=0.3) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    rr, cc = ellipse(*center, *radii, shape=shape, rotation=rotation)
    mask[rr, cc] = True
    return mask


# -- template ----------------------------------------------------------------------------------
def test_template_counts_and_order():
    assert LUNGS_HEART.n_nodes == 120 and FULL.n_nodes == 166
    assert FULL.keys == ("lungR", "lungL", "heart", "clavR", "clavL")
    assert LUNGS_HEART.keys == FULL.keys[:3]
    assert [s.label for s in STRUCTURES] == ["Right Lung", "Left Lung", "Heart", "Right Clavicle", "Left Clavicle"]
    assert FULL.slices() == {"lungR": slice(0, 44), "lungL": slice(44, 94), "heart": slice(94, 120),
                             "clavR": slice(120, 143), "clavL": slice(143, 166)}
    assert TEMPLATES.names() == ("lungs_heart", "full")
    assert TEMPLATES.get("lungs_heart") is LUNGS_HEART and TEMPLATES.get("full") is FULL


def test_split_follows_slices():
    landmarks = np.arange(166 * 2, dtype=float).reshape(166, 2)
    parts = FULL.split(landmarks)
    assert {k: len(v) for k, v in parts.items()} == {"lungR": 44, "lungL": 50, "heart": 26, "clavR": 23, "clavL": 23}
    np.testing.assert_array_equal(parts["heart"][0], landmarks[94])
    np.testing.assert_array_equal(LUNGS_HEART.split(landmarks[:120])["lungL"], landmarks[44:94])
    batch = LUNGS_HEART.split(np.zeros((4, 120, 2)))
    assert batch["lungR"].shape == (4, 44, 2)
    with pytest.raises(ValueError, match="expected 120 nodes"):
        LUNGS_HEART.split(landmarks)


@pytest.mark.parametrize("template", [LUNGS_HEART, FULL], ids=["lungs_heart", "full"])
def test_ring_edges(template):
    edges = template.ring_edges()
    n = template.n_nodes
    assert edges.shape == (2, 2 * n) and edges.dtype == np.int64
    structure_of = np.concatenate([np.full(s.count, i) for i, s in enumerate(template.structures)])
    assert np.all(structure_of[edges[0]] == structure_of[edges[1]])  # no cross-structure edge
    assert not np.any(edges[0] == edges[1])
    pairs = {tuple(e) for e in edges.T.tolist()}
    assert len(pairs) == 2 * n  # no duplicate
    assert all((b, a) in pairs for a, b in pairs)  # undirected
    assert np.all(np.bincount(edges[0], minlength=n) == 2)  # degree 2: a ring
    for sl in template.slices().values():  # consecutive nodes and the closing edge
        idx = np.arange(sl.start, sl.stop)
        assert all((a, b) in pairs for a, b in zip(idx, np.roll(idx, -1), strict=True))

    edge_index = template.edge_index()
    assert isinstance(edge_index, torch.Tensor) and edge_index.dtype == torch.long
    np.testing.assert_array_equal(edge_index.numpy(), edges)


# -- rasterize ---------------------------------------------------------------------------------
def test_rasterize_square_exact_pixels():
    mask = rasterize(SQUARE, (8, 8))
    expected = np.zeros((8, 8), dtype=bool)
    expected[2:5, 2:5] = True
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("x0, x1, y0, y1, count", [
    (1.2, 7.7, 0.6, 4.4, 7 * 3),   # centres 1.5..7.5 by 1.5..3.5
    (2.5, 5.5, 2.5, 5.5, 3 * 3),   # edges through pixel centres: half-open, area kept
    (0.0, 10.0, 0.0, 6.0, 60),     # the whole image
    (3.1, 3.4, 1.0, 5.0, 0),       # thinner than a pixel, between centres
])
def test_rasterize_rectangle_pixel_count(x0, x1, y0, y1, count):
    rect = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    assert rasterize(rect, (6, 10)).sum() == count


def test_rasterize_is_invariant_to_orientation_and_start():
    star = star_polygon(np.random.default_rng(3), 17)
    ref = rasterize(star, (90, 100))
    assert ref.sum() > 100
    np.testing.assert_array_equal(rasterize(star[::-1], (90, 100)), ref)
    np.testing.assert_array_equal(rasterize(np.roll(star, 5, axis=0), (90, 100)), ref)


def test_rasterize_concave_polygon():
    mask = rasterize(U_SHAPE, (6, 6))
    assert mask.sum() == 28
    assert not mask[0:4, 2:4].any() and mask[4:6, :].all() and mask[:, [0, 1, 4, 5]].all()


def star_polygon(rng: np.random.Generator, n: int) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(5, 40, n)
    return np.stack([50 + radii * np.cos(angles), 45 + radii * np.sin(angles)], axis=1)


def test_rasterize_matches_skimage_on_random_concave_polygons():
    # skimage puts pixel centres at integer coordinates; ours are at +0.5
    rng = np.random.default_rng(0)
    for n in rng.integers(3, 40, 50):
        star = star_polygon(rng, n)
        np.testing.assert_array_equal(rasterize(star, (90, 100)), polygon2mask((90, 100), star[:, ::-1] - 0.5))


@pytest.mark.parametrize("contour", [
    np.array([[-10.0, -10.0], [-5.0, -10.0], [-5.0, -5.0]]),   # outside
    np.array([[1.0, 1.0], [5.0, 5.0]]),                        # two points
    np.array([[1.0, 1.0], [5.0, np.nan], [1.0, 5.0]]),         # not finite
], ids=["outside", "degenerate", "nan"])
def test_rasterize_empty_cases(contour):
    mask = rasterize(contour, (8, 8))
    assert mask.shape == (8, 8) and not mask.any()


def test_rasterize_clips_to_the_image():
    mask = rasterize(np.array([[-5.0, -5.0], [4.0, -5.0], [4.0, 3.0], [-5.0, 3.0]]), (8, 8))
    assert mask.sum() == 4 * 3 and mask[:3, :4].all()


def test_landmarks_to_masks_keys_and_shapes():
    rng = np.random.default_rng(1)
    masks = landmarks_to_masks(rng.uniform(10, 50, (120, 2)), (64, 64))
    assert list(masks) == ["lungR", "lungL", "heart"]
    assert all(m.shape == (64, 64) and m.dtype == bool for m in masks.values())


# -- polygon helpers ---------------------------------------------------------------------------
def test_signed_area_and_orientation():
    assert signed_area(SQUARE) == pytest.approx(9.0)
    assert signed_area(SQUARE[::-1]) == pytest.approx(-9.0)
    assert signed_area(U_SHAPE) == pytest.approx(28.0)


def test_resample_closed_is_equally_spaced_by_arc_length():
    out = resample_closed(np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]]), 8)
    expected = [[0, 0], [2, 0], [4, 0], [4, 2], [4, 4], [2, 4], [0, 4], [0, 2]]
    np.testing.assert_allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize("contour, expected", [
    (FIGURE_EIGHT, True),
    (SQUARE, False),
    (U_SHAPE, False),
    (np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), False),
    (np.array([[0, 0], [6, 0], [6, 6], [3, -2], [0, 6]], dtype=float), True),  # spike through the base
], ids=["figure-eight", "square", "concave", "triangle", "spike"])
def test_contour_self_intersects(contour, expected):
    assert contour_self_intersects(contour) is expected


def test_dice():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert dice(a, b) == 1.0
    a[:2] = True
    assert dice(a, a) == 1.0
    b[2:] = True
    assert dice(a, b) == 0.0
    b[1] = True
    assert dice(a, b) == pytest.approx(2 * 4 / (8 + 12))


# -- mask -> contour ---------------------------------------------------------------------------
@pytest.mark.parametrize("structure", STRUCTURES, ids=[s.key for s in STRUCTURES])
def test_mask_to_contour_on_ellipse(structure):
    mask = ellipse_mask()
    contour = mask_to_contour(mask, structure)
    assert contour.shape == (structure.count, 2)
    assert np.sign(signed_area(contour)) == structure.orientation
    centre = contour.mean(axis=0)
    start = np.degrees(np.arctan2(contour[0, 1] - centre[1], contour[0, 0] - centre[0]))
    assert abs((start - structure.start_angle + 180) % 360 - 180) < 3.0
    assert not contour_self_intersects(contour)
    steps = np.linalg.norm(np.diff(np.vstack([contour, contour[:1]]), axis=0), axis=1)
    assert steps.max() / steps.min() < 1.5  # roughly equal spacing along the boundary
    assert dice(rasterize(contour, mask.shape), mask) > 0.99


def test_mask_to_contour_options():
    mask = ellipse_mask()
    np.testing.assert_array_equal(mask_to_contour(mask, "heart"), mask_to_contour(mask, STRUCTURE_BY_KEY["heart"]))
    assert mask_to_contour(mask, "heart", n=200).shape == (200, 2)
    with pytest.raises(ValueError, match="empty"):
        mask_to_contour(np.zeros((10, 10), bool), "heart")


def test_mask_to_contour_keeps_the_largest_component():
    mask = ellipse_mask()
    mask[5:15, 5:15] = True  # a speck far away
    contour = mask_to_contour(mask, "lungR")
    assert contour[:, 0].min() > 30 and contour[:, 1].min() > 30


def test_masks_to_landmarks_round_trip():
    masks = {"lungR": ellipse_mask(center=(150, 70), radii=(100, 45), rotation=0.1),
             "lungL": ellipse_mask(center=(150, 190), radii=(100, 50), rotation=-0.1),
             "heart": ellipse_mask(center=(190, 140), radii=(50, 60), rotation=0.0)}
    landmarks = masks_to_landmarks(masks)
    assert landmarks.shape == (120, 2)
    back = landmarks_to_masks(landmarks, (300, 260))
    assert all(dice(back[k], masks[k]) > 0.99 for k in masks)


# -- real data: JSRT landmarks and SCR masks ---------------------------------------------------
@pytest.fixture(scope="module")
def fidelity(data_root):
    """Summary rows of bench/anatomy_fidelity.py (lungs and heart) over every JSRT case of the pack."""
    spec = importlib.util.spec_from_file_location("anatomy_fidelity", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.summarize(bench.fidelity(data_root, LUNGS_HEART.keys))
    print("\n" + bench.format_table(rows))
    return {(r.check, r.structure): r for r in rows}


def test_jsrt_cases_are_all_covered(fidelity, data_root):
    cases = list((data_root / "cxr-seg" / "jsrt").glob("*_landmarks.npy"))
    assert fidelity["landmarks vs SCR", "lungR"].n == len(cases) > 0


@pytest.mark.parametrize("key", ["lungR", "lungL"])
def test_jsrt_landmarks_match_scr_lungs(fidelity, key):
    assert fidelity["landmarks vs SCR", key].min >= 0.99


def test_jsrt_landmarks_match_scr_heart(fidelity):
    row = fidelity["landmarks vs SCR", "heart"]
    assert row.mean >= 0.99 and row.min >= 0.985


@pytest.mark.parametrize("key", ["lungR", "lungL", "heart"])
def test_jsrt_mask_contour_mask_round_trip(fidelity, key):
    assert fidelity["mask round trip", key].min >= 0.99


def _even_odd_reference(p, shape):
    """Crossing-number test of every pixel centre, one pixel at a time (slow, obvious)."""
    h, w = shape
    x0, y0 = p[:, 0], p[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    out = np.zeros(shape, bool)
    for r in range(h):
        yc = r + 0.5
        cross = (y0 <= yc) != (y1 <= yc)
        if cross.sum() < 2:
            continue
        xs = x0[cross] + (yc - y0[cross]) / (y1[cross] - y0[cross]) * (x1[cross] - x0[cross])
        for c in range(w):
            out[r, c] = np.sum(xs < c + 0.5) % 2 == 1
    return out


def test_rasterize_matches_per_pixel_even_odd_rule():
    """Random polygons, exact ties on pixel centres, horizontal edges: same as the plain rule."""

    rng = np.random.default_rng(3)
    for trial in range(400):
        h, w = (int(v) for v in rng.integers(5, 90, 2))
        n = int(rng.integers(3, 30))
        kind = trial % 4
        if kind == 0:  # anywhere, partly outside the frame
            pts = rng.uniform(-15, max(h, w) + 15, (n, 2))
        elif kind == 1:  # vertices on pixel centres and edges: exact ties
            pts = rng.integers(-2, max(h, w) + 2, (n, 2)) + rng.choice([0.0, 0.5], (n, 2))
        elif kind == 2:  # horizontal edges
            pts = rng.integers(0, max(h, w), (n, 2)).astype(float)
            pts[1::2, 1] = pts[0::2, 1][: len(pts[1::2])]
        else:  # a noisy ellipse
            t = np.linspace(0, 2 * np.pi, n, endpoint=False)
            pts = np.stack([w / 2 + w / 3 * np.cos(t), h / 2 + h / 3 * np.sin(t)], 1) + rng.normal(0, 2, (n, 2))
        with np.errstate(all="ignore"):
            expected = _even_odd_reference(pts, (h, w))
        assert np.array_equal(rasterize(pts, (h, w)), expected), (trial, pts.tolist(), (h, w))
    assert not rasterize(np.array([[0.0, 0.0], [np.nan, 1.0], [2.0, 2.0]]), (8, 8)).any()
    assert not rasterize(np.array([[0.0, -9.0], [5.0, -9.0], [2.0, -4.0]]), (8, 8)).any()
