"""Pad-to-square + resize (SquareFrame): points go back exactly, images and masks land in place."""

from __future__ import annotations

import numpy as np
import pytest

from anatomix.anatomy import dice
from anatomix.io.geometry import SquareFrame

SHAPES = [(3000, 2400), (2400, 3000), (2401, 3001), (3001, 2400), (2400, 2401), (2048, 2048), (7, 4)]
SIZES = [256, 512, 1024]


def disk(height: int, width: int, cx: float, cy: float, r: float) -> np.ndarray:
    """(H, W) bool disk, tested at pixel centres (original frame)."""
    yy, xx = np.ogrid[:height, :width]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 < r**2


def centroid(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted (x, y) centre of an image, continuous pixel coordinates."""
    image = np.asarray(image, dtype=np.float64)
    cols, rows = image.sum(axis=0), image.sum(axis=1)
    return np.array([cols @ (np.arange(cols.size) + 0.5), rows @ (np.arange(rows.size) + 0.5)]) / cols.sum()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", SHAPES)
def test_points_round_trip(shape, size):
    h, w = shape
    frame = SquareFrame(h, w, size)
    xy = np.random.default_rng(0).uniform([0, 0], [w, h], (166, 2))
    model = frame.points_to_model(xy)
    assert model.shape == (166, 2)
    assert np.all((model >= 0) & (model <= size))
    assert np.abs(frame.points_to_original(model) - xy).max() < 0.01


@pytest.mark.parametrize("shape", SHAPES[:-1])
def test_padding_is_centred(shape):
    h, w = shape
    frame = SquareFrame(h, w, 512)
    corners = frame.points_to_model(np.array([[0.0, 0.0], [w, h]]))
    # the image spans the whole square along its long side and sits in the middle of the other
    np.testing.assert_allclose(corners[0] + corners[1], [512, 512], atol=1e-9)
    assert np.isclose(max(corners[1] - corners[0]), 512)
    model = frame.image_to_model(np.ones((h, w), np.float32))
    np.testing.assert_allclose(model, model[::-1, ::-1], atol=1e-5)  # symmetric padding
    np.testing.assert_allclose(centroid(model), [256, 256], atol=1e-3)


def test_pad_and_scale_values():
    frame = SquareFrame(3000, 2401, 1024)
    assert frame.side == 3000
    assert frame.pad == (299.5, 0.0)
    assert frame.scale == pytest.approx(1024 / 3000)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", SHAPES[:-1])
def test_bright_dot_lands_at_mapped_point(shape, size):
    h, w = shape
    frame = SquareFrame(h, w, size)
    x, y = 0.37 * w, 0.61 * h
    image = disk(h, w, x, y, 0.6 / frame.scale).astype(np.float32)  # about one model pixel across
    model = frame.image_to_model(image)
    assert model.shape == (size, size) and model.dtype == np.float32
    expected = frame.points_to_model((x, y))
    peak = np.unravel_index(np.argmax(model), model.shape)
    assert np.abs(np.array([peak[1] + 0.5, peak[0] + 0.5]) - expected).max() <= 1.0
    # the centre of mass moves exactly with the mapping (up to the dot's own pixelation)
    assert np.abs(centroid(model) - frame.points_to_model(centroid(image))).max() < 0.02


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", SHAPES[:-1])
def test_mask_round_trip_dice(shape, size):
    h, w = shape
    frame = SquareFrame(h, w, size)
    mask = disk(h, w, 0.45 * w, 0.55 * h, 0.3 * min(h, w))
    back = frame.mask_to_original(frame.image_to_model(mask) > 0.5)
    assert back.shape == (h, w) and back.dtype == bool
    assert dice(back, mask) > 0.98


def test_map_to_original_samples_pixel_centres():
    # a model-frame ramp equal to the model x coordinate comes back as the mapped x coordinate
    frame = SquareFrame(300, 200, 64)
    ramp = np.tile(np.arange(64, dtype=np.float32) + 0.5, (64, 1))
    back = frame.map_to_original(ramp)
    cols = np.arange(200) + 0.5
    expected = frame.points_to_model(np.stack([cols, np.zeros(200)], axis=1))[:, 0]
    inner = (expected > 0.5) & (expected < 63.5)  # away from the clamped border
    np.testing.assert_allclose(back[150, inner], expected[inner], atol=1e-4)
