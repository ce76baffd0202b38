"""The one preprocessing path shared by training and inference of the segmenters."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from anatomix.io.geometry import SquareFrame


def normalise_intensity(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Robust min-max: map the [low, high] percentiles of (H, W) ``image`` to [0, 1], clipped.

    Makes the models indifferent to the window, bit depth and exposure of the source.
    Constant images come back as zeros.
    """
    lo, hi = np.percentile(image, [low, high])
    if hi - lo < 1e-6:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def to_model_frame(pixels: np.ndarray, size: int) -> Tuple[np.ndarray, SquareFrame]:
    """Bring an original-frame (H, W) image into the (size, size) model frame, normalised.

    Returns:
        (model image (size, size) float32 in [0, 1], the frame that maps results back).
    """
    frame = SquareFrame(pixels.shape[0], pixels.shape[1], size)
    return normalise_intensity(frame.image_to_model(pixels)), frame
