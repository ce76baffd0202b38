"""Statistical shape model of the lungs+heart contours: PCA of training landmarks and the
Mahalanobis distance of a new contour set to it.

A landmark set (120 nodes of :data:`anatomix.anatomy.LUNGS_HEART`) is normalised for position and
size only: centred on its mean node and divided by its RMS distance to that centre. Shapes are then projected
onto the tangent plane at the mean shape. Rotation is
deliberately **not** removed, so contours drawn on a rotated radiograph are far from the model.
The distance is the probabilistic-PCA Mahalanobis distance

.. math::

    d^2 = \\sum_{i=1}^{m} \\frac{b_i^2}{\\lambda_i} + \\frac{\\lVert r \\rVert^2}{\\sigma^2}

with ``b`` the coordinates in the ``m`` leading modes (98 % of the variance), ``r`` the residual
outside them and ``sigma^2`` the mean of the discarded eigenvalues. ``d`` is reported divided by
``sqrt(m + 1)``, so that training shapes score about 1 and the threshold reads the same whatever
``m`` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from anatomix.errors import UsageError


def normalise_shape(landmarks: np.ndarray) -> np.ndarray:
    """(..., N, 2) landmarks -> (..., 2N) centred and scaled to unit RMS radius."""
    x = np.asarray(landmarks, dtype=np.float64)
    x = x - x.mean(axis=-2, keepdims=True)
    rms = np.sqrt((x ** 2).sum(axis=-1).mean(axis=-1))[..., None, None]
    return (x / np.maximum(rms, 1e-9)).reshape(*x.shape[:-2], -1)


def _tangent(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Project unit-size shapes onto the tangent plane of the shape space at ``mean``
    (rescale each so that its projection on ``mean`` equals ``mean``): removes the size
    variation that normalising to unit RMS leaves along the mean."""
    dot = (x * mean).sum(axis=-1, keepdims=True)
    return x * ((mean * mean).sum() / np.where(np.abs(dot) < 1e-12, 1e-12, dot))


@dataclass
class ShapeModel:
    """PCA shape model.

    Attributes:
        mean: (2N,) mean normalised shape.
        modes: (m, 2N) orthonormal leading modes.
        variances: (m,) their eigenvalues.
        residual_variance: mean eigenvalue of the discarded modes (per dimension).
        threshold: distance above which a shape is implausible (see :meth:`fit`).
        n_nodes: N.
    """

    mean: np.ndarray
    modes: np.ndarray
    variances: np.ndarray
    residual_variance: float
    threshold: float
    n_nodes: int

    @classmethod
    def fit(cls, landmarks: np.ndarray, variance_kept: float = 0.98, folds: int = 5,
            threshold_factor: float = 1.5) -> "ShapeModel":
        """Fit on (S, N, 2) training landmarks.

        The threshold is ``threshold_factor`` times the largest distance of a training shape to a
        model fitted without it (``folds``-fold cross-validation), i.e. 1.5x the worst real
        annotated shape seen when held out.
        """
        x = normalise_shape(landmarks)
        model = cls._pca(x, variance_kept, landmarks.shape[1])
        held_out = np.zeros(len(x))
        order = np.arange(len(x))
        for f in range(folds):
            test = order % folds == f
            sub = cls._pca(x[~test], variance_kept, landmarks.shape[1])
            held_out[test] = sub._distance_normalised(x[test])
        model.threshold = float(threshold_factor * held_out.max())
        return model

    @classmethod
    def _pca(cls, x: np.ndarray, variance_kept: float, n_nodes: int) -> "ShapeModel":
        x = _tangent(x, x.mean(axis=0))
        mean = x.mean(axis=0)
        u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        lam = s ** 2 / max(len(x) - 1, 1)
        m = int(np.searchsorted(np.cumsum(lam) / lam.sum(), variance_kept) + 1)
        m = min(m, len(lam) - 1)
        dims = x.shape[1]
        rest = lam[m:].sum() / max(dims - m, 1)
        return cls(mean, vt[:m], lam[:m], float(max(rest, 1e-12)), float("inf"), n_nodes)

    def _distance_normalised(self, x: np.ndarray) -> np.ndarray:
        d = _tangent(x, self.mean) - self.mean
        b = d @ self.modes.T
        r = d - b @ self.modes
        d2 = (b ** 2 / self.variances).sum(axis=-1) + (r ** 2).sum(axis=-1) / self.residual_variance
        return np.sqrt(d2 / (len(self.variances) + 1))

    def distance(self, landmarks: np.ndarray) -> np.ndarray | float:
        """Scaled Mahalanobis distance of (N, 2) or (S, N, 2) landmarks (about 1 for training
        shapes); NaN for non-finite input.

        Raises:
            anatomix.errors.UsageError: the landmarks do not have the model's node count.
        """
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.shape[-2] != self.n_nodes:
            raise UsageError(f"shape model has {self.n_nodes} nodes, got {lm.shape[-2]}")
        out = self._distance_normalised(normalise_shape(lm))
        out = np.where(np.isfinite(lm).all(axis=(-1, -2)), out, np.nan)
        return float(out) if out.ndim == 0 else out

    def save(self, path: Path | str) -> None:
        np.savez_compressed(path, mean=self.mean.astype(np.float32), modes=self.modes.astype(np.float32),
                            variances=self.variances, residual_variance=self.residual_variance,
                            threshold=self.threshold, n_nodes=self.n_nodes)

    @classmethod
    def load(cls, path: Path | str) -> "ShapeModel":
        z = np.load(path)
        return cls(z["mean"].astype(np.float64), z["modes"].astype(np.float64), z["variances"],
                   float(z["residual_variance"]), float(z["threshold"]), int(z["n_nodes"]))


_DEFAULT: Optional[ShapeModel] = None


def default_shape_model() -> Optional[ShapeModel]:
    """The bundled model (``anatomix/weights/shape_model.npz``), or None when it is absent."""
    global _DEFAULT
    if _DEFAULT is None:
        from anatomix.models import WEIGHTS_DIR

        p = WEIGHTS_DIR / "shape_model.npz"
        if p.is_file():
            _DEFAULT = ShapeModel.load(p)
    return _DEFAULT

