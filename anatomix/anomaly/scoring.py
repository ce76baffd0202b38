"""Residual maps and their aggregation inside anatomical masks.

Regions: ``image`` (the whole model frame), ``lungs`` (lungR | lungL), ``lungR``, ``lungL``,
``heart`` and ``anatomy`` (lungs | heart). Masks come in the original frame as a dict with
keys ``lungR``, ``lungL``, ``heart`` (bool (H, W)); :func:`masks_to_model` brings them into the
model frame with the same :class:`~anatomix.io.geometry.SquareFrame` as the image.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from anatomix.anatomy import STRUCTURE_KEYS
from anatomix.errors import UsageError

RESIDUALS = ("auto", "l2", "l1", "ssim", "l2+ssim", "feature", "critic")
REDUCTIONS = ("mean", "max", "topk")
REGIONS = ("image", "lungs", "lungR", "lungL", "heart", "anatomy")


def is_residual(name: str) -> bool:
    """A known residual, or ``<known residual other than critic>+critic``."""
    if name.endswith("+critic"):
        return name[: -len("+critic")] in RESIDUALS and name != "critic+critic"
    return name in RESIDUALS


def _gaussian_window(size: int = 7, sigma: float = 1.5):
    import torch

    ax = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(x, y, size: int = 7, sigma: float = 1.5):
    """Per-pixel SSIM ``(B, 1, S, S)`` of two ``(B, 1, S, S)`` images in [0, 1]."""
    import torch.nn.functional as F

    w = _gaussian_window(size, sigma).to(x)
    pad = size // 2

    def f(t):
        return F.conv2d(F.pad(t, (pad,) * 4, mode="reflect"), w)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))


def residual_map(x, rec, kind: str = "l2"):
    """Residual between images and reconstructions, ``(B, 1, S, S)``, higher = worse.

    ``l2`` squared error, ``l1`` absolute error, ``ssim`` ``(1 - SSIM) / 2``, ``l2+ssim`` sum.
    """
    if kind == "l2":
        return (x - rec) ** 2
    if kind == "l1":
        return (x - rec).abs()
    if kind == "ssim":
        return (1 - ssim_map(x, rec)) / 2
    if kind == "l2+ssim":
        return (x - rec) ** 2 + (1 - ssim_map(x, rec)) / 2
    raise UsageError(f"unknown residual {kind!r}; choose one of {RESIDUALS}")


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth a stack of maps ``(B, S, S)`` (sigma in model pixels; 0 = none)."""
    if sigma <= 0:
        return maps
    from scipy import ndimage

    return np.stack([ndimage.gaussian_filter(m, sigma, mode="nearest") for m in maps])


def region_masks(masks: Mapping[str, np.ndarray] | None, shape) -> dict[str, np.ndarray]:
    """Expand structure masks into all regions (``image`` always present).

    Args:
        masks: ``{"lungR", "lungL", "heart"}`` -> bool array of ``shape`` (any subset), or None.
        shape: ``(S, S)`` of the map the masks belong to.
    """
    out = {"image": np.ones(shape, dtype=bool)}
    if not masks:
        return out
    m = {k: np.asarray(v, dtype=bool) for k, v in masks.items() if k in STRUCTURE_KEYS and v is not None}
    for k, v in m.items():
        if v.shape != tuple(shape):
            raise UsageError(f"mask {k!r} has shape {v.shape}, expected {tuple(shape)}")
        out[k] = v
    if "lungR" in m and "lungL" in m:
        out["lungs"] = m["lungR"] | m["lungL"]
        if "heart" in m:
            out["anatomy"] = out["lungs"] | m["heart"]
    return out


def masks_to_model(masks: Mapping[str, np.ndarray] | None, frame) -> dict[str, np.ndarray] | None:
    """Original-frame structure masks -> model-frame bool masks via ``frame.image_to_model``."""
    if not masks:
        return None
    return {k: frame.image_to_model(np.asarray(v, dtype=np.float32)) >= 0.5
            for k, v in masks.items() if v is not None}


def aggregate(m: np.ndarray, mask: np.ndarray, reduce: str = "mean", topk: float = 5.0) -> float:
    """One number from the map values inside ``mask``.

    Args:
        m: ``(S, S)`` residual map.
        mask: ``(S, S)`` bool; an empty mask gives NaN.
        reduce: ``mean``, ``max`` or ``topk`` (mean of the highest ``topk`` percent).
    """
    v = m[mask]
    if v.size == 0:
        return float("nan")
    if reduce == "mean":
        return float(v.mean())
    if reduce == "max":
        return float(v.max())
    if reduce == "topk":
        k = max(1, round(v.size * topk / 100.0))
        return float(np.partition(v, v.size - k)[v.size - k:].mean())
    raise UsageError(f"unknown reduction {reduce!r}; choose one of {REDUCTIONS}")


def region_scores(m: np.ndarray, masks: Mapping[str, np.ndarray] | None = None,
                  reduce: str = "mean", topk: float = 5.0) -> dict[str, float]:
    """Raw scores of one map for every available region (model frame masks)."""
    return {name: aggregate(m, r, reduce, topk) for name, r in region_masks(masks, m.shape).items()}


def overlay(pixels: np.ndarray, heat: np.ndarray, masks: Mapping[str, np.ndarray] | None = None,
            vmax: float | None = None, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 overlay of a heat map on the radiograph (both original frame).

    The heat map is scaled to [0, vmax] (default: its 99.5th percentile), coloured with a
    black-red-yellow ramp and blended where it is above 10 % of the scale. With masks, the heat
    is drawn inside their union only (the anatomy the score is about: whole-image members of an
    ensemble also light up collimation edges and labels) and the mask outlines in cyan.
    """
    g = np.clip(pixels, 0, 1)
    rgb = np.stack([g, g, g], -1)
    vmax = float(np.percentile(heat, 99.5)) if vmax is None else float(vmax)
    h = np.clip(heat / max(vmax, 1e-12), 0, 1)
    col = np.stack([np.clip(h * 2, 0, 1), np.clip(h * 2 - 1, 0, 1), np.zeros_like(h)], -1)
    a = alpha * (h > 0.1) * np.clip(h * 1.5, 0, 1)
    shapes = [np.asarray(v, bool) for v in (masks or {}).values() if v is not None]
    if shapes:
        a = a * np.logical_or.reduce(shapes)
    rgb = rgb * (1 - a[..., None]) + col * a[..., None]
    if shapes:
        from scipy import ndimage

        for v in shapes:
            rgb[v & ~ndimage.binary_erosion(v)] = (0.0, 1.0, 1.0)
    return (rgb * 255).round().astype(np.uint8)
