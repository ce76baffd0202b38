"""Graph contours refined onto a pixel model's boundary: nodes move along their normals only,
by a bounded amount, and the result stays one closed contour per structure."""

import numpy as np
import pytest
from refine_doubles import CENTRES, GraphDouble, PixelDouble, circle, disk_probability

from anatomix.anatomy import LUNGS_HEART, contour_self_intersects, dice
from anatomix.io.record import Radiograph
from anatomix.refine import (
    RefineConfig,
    RefinedSegmenter,
    boundary_offsets,
    outward_normals,
    refine_contour,
)


@pytest.mark.parametrize("clockwise", [False, True])
def test_normals_point_outwards(clockwise):
    c = circle(40, 10, clockwise=clockwise)
    radial = (c - 32.0) / 10.0
    assert np.allclose((outward_normals(c) * radial).sum(1), 1.0, atol=0.02)


@pytest.mark.parametrize("r, expected", [(9.0, 3.0), (14.0, -2.0), (12.0, 0.0)])
def test_offsets_reach_the_iso_line(r, expected):
    offsets = boundary_offsets(disk_probability(12.0), circle(44, r), RefineConfig(max_shift=6.0))
    assert np.abs(offsets - expected).max() < 0.1


def test_moves_are_bounded_and_nodes_keep_their_angle():
    contour = circle(44, 4.0)
    refined = refine_contour(disk_probability(20.0), contour, RefineConfig(max_shift=5.0))
    assert np.abs(refined - contour).max() == 0.0  # the boundary is 16 px away: out of reach
    contour = circle(44, 17.0)
    refined = refine_contour(disk_probability(20.0), contour, RefineConfig(max_shift=5.0))
    angles = lambda c: np.arctan2(c[:, 1] - 32, c[:, 0] - 32)
    assert np.allclose(angles(refined), angles(contour), atol=1e-6)
    assert np.allclose(np.linalg.norm(refined - 32.0, axis=1), 20.0, atol=0.1)
    assert not contour_self_intersects(refined)


def test_refined_segmenter_lands_on_the_pixel_boundary():
    seg = RefinedSegmenter(GraphDouble(), PixelDouble()).predict([Radiograph(np.zeros((64, 64), np.float32))])[0]
    for key, sl in LUNGS_HEART.slices().items():
        radius = np.linalg.norm(seg.landmarks[sl] - CENTRES[key], axis=1)
        assert np.allclose(radius, 8.0, atol=0.1)
        assert dice(seg.masks[key], disk_probability(8.0, CENTRES[key]) > 0.5) > 0.95


def test_refuses_a_pixel_model_without_the_structures():
    pixel = PixelDouble()
    pixel.keys = ("lungR", "lungL")
    with pytest.raises(ValueError, match="heart"):
        RefinedSegmenter(GraphDouble(), pixel)


def test_refined_checkpoint_names_its_models(tmp_path):
    import shutil

    import torch

    from anatomix.errors import CheckpointError
    from anatomix.models import load_segmenter, resolve
    from anatomix.refine import save_refined

    # relative paths resolve against the checkpoint's folder; registry names as they are
    shutil.copy(resolve("pixel"), tmp_path / "p.pt")
    save_refined(tmp_path / "r.pt", "graph", "p.pt", RefineConfig(max_shift=5.0))
    assert torch.load(tmp_path / "r.pt", weights_only=True)["family"] == "refined"
    seg = load_segmenter(str(tmp_path / "r.pt"))
    assert isinstance(seg, RefinedSegmenter) and seg.config.max_shift == 5.0
    out = seg.predict([Radiograph(np.random.default_rng(0).random((96, 80)).astype(np.float32))])[0]
    assert out.landmarks.shape == (120, 2) and set(out.masks) == set(LUNGS_HEART.keys)
    save_refined(tmp_path / "bad.pt", "pixel", "p.pt")
    with pytest.raises(CheckpointError, match="graph and a pixel"):
        load_segmenter(str(tmp_path / "bad.pt"))
