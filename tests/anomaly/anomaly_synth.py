"""Synthetic "radiographs" for the anomaly tests: smooth normal images, plus a bright blob."""

from __future__ import annotations

import numpy as np


def normal_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size) float32: two dark 'lungs' on a bright background, jittered a little."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        dx, dy = rng.normal(0, 0.02, 2)
        a = 0.75 + rng.normal(0, 0.03)
        img = np.full((size, size), a)
        for cx in (0.3, 0.7):
            r = ((xx - cx - dx) / 0.15) ** 2 + ((yy - 0.5 - dy) / 0.3) ** 2
            img -= 0.45 * np.exp(-r ** 2)
        img += rng.normal(0, 0.01, (size, size))
        out.append(np.clip(img, 0, 1))
    return np.asarray(out, dtype=np.float32)


def with_blob(img: np.ndarray, cx: float = 0.3, cy: float = 0.5, r: float = 0.08) -> np.ndarray:
    """The image with a bright round opacity at (cx, cy) (fractions of the side)."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w], dtype=float)[:, None, None]
    out = img.copy()
    out[((xx - cx) ** 2 + (yy - cy) ** 2) < r ** 2] = 0.95
    return out


