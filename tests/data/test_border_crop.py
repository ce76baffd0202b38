"""Border crop: the exposed field is found, ignores text in a band, and maps back exactly."""

import numpy as np
import pytest

from anatomix.anatomy import dice
from anatomix.data.preprocess import exposed_field, to_model_frame
from anatomix.io.geometry import SquareFrame


def _film(h=300, w=240, seed=0) -> np.ndarray:
    """A textured 'radiograph' in [0.2, 0.9]: no row or column is flat."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    return (0.55 + 0.2 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + 0.1 * rng.random((h, w))).astype(np.float32)


def _padded(film, top=0, bottom=0, left=0, right=0, value=0.0):
    return np.pad(film, ((top, bottom), (left, right)), constant_values=value)


def test_no_border_no_crop():
    assert exposed_field(_film()) is None


@pytest.mark.parametrize("pads", [dict(bottom=120), dict(top=15, left=30), dict(right=40, value=1.0)])
def test_bands_are_cropped_exactly(pads):
    film = _film()
    image = _padded(film, **pads)
    top, left = pads.get("top", 0), pads.get("left", 0)
    assert exposed_field(image) == (top, left, top + film.shape[0], left + film.shape[1])


def test_text_burnt_into_a_band_does_not_stop_the_crop():
    film = _film()
    image = _padded(film, bottom=100)
    image[350:360, 20:28] = 1.0  # a small label inside the black band
    assert exposed_field(image) == (0, 0, 300, 240)


def test_crop_never_keeps_less_than_the_minimum():
    image = np.zeros((200, 200), np.float32)
    image[:20, :20] = _film(20, 20)  # almost all black
    top, left, bottom, right = exposed_field(image)
    assert bottom - top >= 0.45 * 200 - 1 and right - left >= 0.45 * 200 - 1


def test_large_image_box_is_conservative():
    film = _film(1500, 1200)
    box = exposed_field(_padded(film, bottom=600))
    assert box[0] == 0 and 1500 <= box[2] <= 1500 + 3  # one subsampled pixel at most


def test_points_round_trip_with_a_box():
    frame = SquareFrame(400, 300, 256, box=(10, 20, 330, 290))
    xy = np.random.default_rng(1).uniform([20, 10], [290, 330], (200, 2))
    assert np.abs(frame.points_to_original(frame.points_to_model(xy)) - xy).max() < 1e-9


def test_model_frame_after_crop_equals_the_unpadded_film():
    film = _film()
    a, frame_a = to_model_frame(film, 128)
    b, frame_b = to_model_frame(_padded(film, top=40, bottom=90), 128, crop_borders=True)
    assert frame_b.box == (40, 0, 340, 240)
    assert np.abs(a - b).max() < 1e-5
    # a point found in the model frame lands on the same film pixel in both originals
    p = np.array([[64.0, 50.0]])
    assert np.allclose(frame_b.points_to_original(p), frame_a.points_to_original(p) + [0, 40])


def test_masks_map_back_into_the_box_and_nowhere_else():
    film = _film()
    image = _padded(film, bottom=150, left=25)
    _, frame = to_model_frame(image, 128, crop_borders=True)
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    disk = (xx + 0.5 - 140) ** 2 + (yy + 0.5 - 150) ** 2 < 60 ** 2
    back = frame.mask_to_original(frame.image_to_model(disk.astype(np.float32)))
    assert dice(back, disk) > 0.98
    full = frame.mask_to_original(np.ones((128, 128), np.float32))
    top, left, bottom, right = frame.box
    assert full[top:bottom, left:right].all() and full.sum() == (bottom - top) * (right - left)
