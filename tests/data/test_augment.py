"""Augmentation moves landmarks exactly with the image."""

import numpy as np
import pytest

from anatomix.data.augment import AugmentConfig, LandmarkAugment, move_points


def _blob_centroid(image: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    w = image / image.sum()
    return np.array([(xs * w).sum() + 0.5, (ys * w).sum() + 0.5])


@pytest.mark.parametrize("seed", range(5))
def test_landmark_follows_bright_dot(seed):
    rng = np.random.default_rng(seed)
    aug = LandmarkAugment(AugmentConfig(rotate_deg=30, scale=0.2, translate=0.1, p_intensity=0.0), seed=seed)
    r, c = rng.integers(24, 40, 2)
    image = np.zeros((64, 64), np.float32)
    image[r - 1 : r + 2, c - 1 : c + 2] = 1.0  # 3x3 square centred on pixel (r, c)
    out, moved = aug(image, np.array([[c + 0.5, r + 0.5]]))
    assert np.linalg.norm(_blob_centroid(out) - moved[0]) < 0.2


def test_identity_matrix_keeps_points():
    xy = np.array([[3.5, 7.25], [10.0, 1.0]])
    assert np.allclose(move_points(xy, np.eye(3)), xy)


def test_intensity_stays_in_unit_range_and_shape():
    aug = LandmarkAugment(seed=1)
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    out, pts = aug(image, np.zeros((5, 2)))
    assert out.shape == (32, 32) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert pts.shape == (5, 2)
