"""The one preprocessing path shared by training and inference of the segmenters."""

from __future__ import annotations

from typing import Optional, Tuple

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


BORDER_FLAT = 0.97
"""A row or column belongs to a border when at least this fraction of its pixels is flat (near
black or near white) ..."""
BORDER_ONE_TONE = 0.9
"""... and at least this fraction is of one tone: burnt-in text (up to a tenth of the row) in
a band does not stop the crop."""
BORDER_DARK, BORDER_BRIGHT = 0.06, 0.97
"""Normalised intensities below / above which a pixel counts as black / white border."""
MIN_KEPT = 0.45
"""The crop never keeps less than this fraction of the height or the width."""


def _border_run(flags: np.ndarray, limit: int) -> int:
    """Length of the run of True at the start of ``flags``, at most ``limit``."""
    run = int(np.argmin(flags)) if not flags.all() else flags.size
    return min(run, limit)


def exposed_field(pixels: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """The exposed field of a radiograph: the box inside flat black or white border bands.

    Scanned films and exported DICOMs often carry padding bands or collimator shadows (the
    Montgomery films of the data pack: wide black bands under the chest). Rows and columns at
    the edges whose pixels are almost all flat (:data:`BORDER_FLAT`, :data:`BORDER_ONE_TONE`),
    after robust normalisation, are cropped, never more than leaves :data:`MIN_KEPT` of either
    side. Computed on a copy subsampled to at most ~512 px per side, then mapped to full
    resolution (the box is conservative by one subsampled pixel).

    Args:
        pixels: (H, W) original-frame image, any range.

    Returns:
        ``(top, left, bottom, right)`` in original pixels (bottom/right exclusive), or ``None``
        when nothing is cropped.
    """
    h, w = pixels.shape
    step = max(1, int(np.ceil(max(h, w) / 512)))
    small = normalise_intensity(np.asarray(pixels[::step, ::step], dtype=np.float32))
    dark, bright = small < BORDER_DARK, small > BORDER_BRIGHT

    def border(axis: int) -> np.ndarray:
        d, b = dark.mean(axis=axis), bright.mean(axis=axis)
        return (d + b >= BORDER_FLAT) & (np.maximum(d, b) >= BORDER_ONE_TONE)

    rows, cols = border(1), border(0)
    sh, sw = small.shape
    max_rows, max_cols = int(sh * (1 - MIN_KEPT)), int(sw * (1 - MIN_KEPT))
    top = _border_run(rows, max_rows)
    bottom = _border_run(rows[::-1], max_rows - top)
    left = _border_run(cols, max_cols)
    right = _border_run(cols[::-1], max_cols - left)
    if top == bottom == left == right == 0:
        return None
    # subsampled index i covers original rows [i*step, (i+1)*step): keep every partly kept pixel
    return (top * step, left * step, min(h, (sh - bottom) * step), min(w, (sw - right) * step))


def to_model_frame(pixels: np.ndarray, size: int,
                   crop_borders: bool = False) -> Tuple[np.ndarray, SquareFrame]:
    """Bring an original-frame (H, W) image into the (size, size) model frame, normalised.

    Args:
        pixels: (H, W) image as read.
        size: side of the square model frame.
        crop_borders: crop to :func:`exposed_field` first (models trained with it say so in
            their config); results still map back exactly to the whole original frame.

    Returns:
        (model image (size, size) float32 in [0, 1], the frame that maps results back).
    """
    box = exposed_field(pixels) if crop_borders else None
    frame = SquareFrame(pixels.shape[0], pixels.shape[1], size, box)
    return normalise_intensity(frame.image_to_model(pixels)), frame
