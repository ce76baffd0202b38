"""Test doubles for RefinedSegmenter: a graph model that predicts circles and a pixel model
whose probabilities are disks at the same centres (original frame = model frame, 64 x 64)."""

from types import SimpleNamespace

import numpy as np

from anatomix.anatomy import LUNGS_HEART
from anatomix.io.geometry import SquareFrame
from anatomix.segmentation import Segmentation

CENTRES = {"lungR": (20.0, 30.0), "lungL": (44.0, 30.0), "heart": (34.0, 44.0)}


def circle(n, r, centre=(32.0, 32.0), clockwise=False):
    """(n, 2) points on a circle, counter-clockwise in image axes unless ``clockwise``."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) * (-1 if clockwise else 1)
    return np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], axis=1)


def disk_probability(r, centre=(32.0, 32.0), size=64):
    """A smooth (size, size) probability map: 0.5 exactly on the circle of radius r."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    d = np.hypot(xx - centre[0], yy - centre[1])
    return (1.0 / (1.0 + np.exp((d - r) / 1.5))).astype(np.float32)


CONFIG = SimpleNamespace(image_size=64, crop_borders=False)
"""What :class:`~anatomix.refine.RefinedSegmenter` reads of both models' configs."""


def _prepare(radiograph):
    return np.zeros((64, 64), np.float32), SquareFrame(64, 64, 64)


class GraphDouble:
    """A graph-model double: circles of radius 6 at :data:`CENTRES`."""
    family, template, uncertainty_samples, config = "graph", LUNGS_HEART, 0, CONFIG
    prepare = staticmethod(_prepare)

    def predict(self, radiographs, with_masks=True, prepared=None):
        xy = np.concatenate([circle(s.count, 6.0, CENTRES[s.key]) for s in LUNGS_HEART.structures])
        return [Segmentation(r.image_id, None, r.shape, LUNGS_HEART, xy, {}) for r in radiographs]


class PixelDouble:
    """A pixel-model double whose probabilities are disks of radius 8 at :data:`CENTRES`."""
    family, keys, config = "pixel", ("lungR", "lungL", "heart"), CONFIG
    prepare = staticmethod(_prepare)

    def model_inputs(self, radiographs, prepared=None):
        return None, [frame for _, frame in (prepared or [_prepare(r) for r in radiographs])]

    def probabilities_of(self, _x):
        return np.stack([disk_probability(8.0, CENTRES[k]) for k in self.keys])[None]
