"""Writers for masks, landmarks and overlays; every file is written atomically.

All inputs are in the **original frame** of the radiograph unless a name says otherwise:
masks are (H, W) arrays aligned with ``Radiograph.pixels``; landmarks and contours are (x, y)
pixel coordinates where pixel (r, c) covers [c, c+1) x [r, r+1).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Mapping

import numpy as np

from anatomix.anatomy import LUNGS_HEART, Template
from anatomix.io.atomic import atomic_write
from anatomix.io.read import display_to_nifti
from anatomix.io.record import Radiograph

PathLike = str | os.PathLike

STRUCTURE_COLOURS = {
    "lungR": (255, 70, 70),
    "lungL": (60, 150, 255),
    "heart": (255, 200, 0),
    "clavR": (0, 220, 120),
    "clavL": (220, 90, 255),
}
"""RGB colour of each structure key in overlays; other keys are drawn white."""

FRAMES = ("original", "model")


def _binary(mask: np.ndarray) -> np.ndarray:
    """Check that ``mask`` is a (H, W) bool or 0/1 array and return it as bool."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2D (H, W), got shape {m.shape}")
    if m.dtype != bool and not np.isin(m, (0, 1)).all():
        raise ValueError(f"mask must be bool or 0/1, got values in [{m.min()}, {m.max()}]")
    return m.astype(bool)


def write_mask_png(path: PathLike, mask: np.ndarray) -> None:
    """Write a binary mask as an 8-bit grayscale PNG with values 0 and 255.

    Args:
        path: destination ``.png``.
        mask: (H, W) bool or 0/1 array in the original frame.
    """
    from PIL import Image

    image = Image.fromarray(_binary(mask).astype(np.uint8) * 255)
    with atomic_write(path) as tmp:
        image.save(tmp, format="PNG")


def write_mask_nifti(path: PathLike, mask: np.ndarray, like: Radiograph | None = None) -> None:
    """Write a binary mask as a uint8 0/1 NIfTI-1 image (``.nii`` or ``.nii.gz``).

    When ``like`` was read from NIfTI (it has an ``affine``), the mask is put back into that
    file's array layout (the inverse of :func:`anatomix.io.read.nifti_to_display`) and saved
    with its affine, so the mask overlays the input voxel for voxel in any NIfTI viewer.
    Otherwise the array is (W, H) with affine ``diag(-col_mm, -row_mm, 1, 1)`` (spacing from
    ``like.spacing``, else 1 mm): the ITK convention for 2D images, which reads back through
    :func:`anatomix.io.read_radiograph` in the same orientation as ``mask``.

    Args:
        path: destination ending in ``.nii`` or ``.nii.gz``.
        mask: (H, W) bool or 0/1 array in the original (display) frame.
        like: the radiograph the mask belongs to, or None.
    """
    import nibabel as nib

    name = os.fspath(path).lower()
    if not name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"NIfTI mask path must end in .nii or .nii.gz: {path}")
    m = _binary(mask).astype(np.uint8)
    if like is not None and like.affine is not None:
        affine, shape = np.asarray(like.affine, dtype=np.float64), like.meta.get("nifti_shape")
    else:
        row_mm, col_mm = like.spacing if like is not None and like.spacing else (1.0, 1.0)
        affine, shape = np.diag([-col_mm, -row_mm, 1.0, 1.0]), None
    image = nib.Nifti1Image(display_to_nifti(m, affine, shape), affine)
    image.header.set_data_dtype(np.uint8)
    image.header.set_xyzt_units("mm")
    data = image.to_bytes()
    with atomic_write(path) as tmp:
        # mtime=0: the same mask gives the same bytes on every run (reproducible outputs)
        tmp.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)


def write_landmarks_json(path: PathLike, landmarks: np.ndarray, template: Template = LUNGS_HEART,
                         frame: str = "original",
                         image_shape: tuple[int, int] | None = None) -> None:
    """Write landmarks as JSON, one (x, y) list per structure.

    The file is ``{"frame": frame, "height": H, "width": W, "structures": {"lungR": [[x, y],
    ...], ...}}`` with structures in the template's order (height/width are null when
    ``image_shape`` is None).

    Args:
        path: destination ``.json``.
        landmarks: (template.n_nodes, 2) (x, y) coordinates in ``frame``.
        template: the node layout of ``landmarks``.
        frame: ``"original"`` or ``"model"``: the frame the coordinates are in.
        image_shape: (H, W) of that frame.

    Raises:
        ValueError: wrong shape, unknown frame, or non-finite coordinates.
    """
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"landmarks must be (n_nodes, 2), got shape {points.shape}")
    height, width = (int(s) for s in image_shape) if image_shape is not None else (None, None)
    doc = {"frame": frame, "height": height, "width": width,
           "structures": {k: v.tolist() for k, v in template.split(points).items()}}
    text = json.dumps(doc, allow_nan=False)
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def _overlay_base(pixels: np.ndarray, max_side: int):
    """(H, W) [0, 1] image -> RGB PIL image with its longer side at most ``max_side``."""
    from PIL import Image

    image = np.asarray(pixels, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"radiograph_pixels must be (H, W), got shape {image.shape}")
    h, w = image.shape
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    base = Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))
    if base.size != size:
        base = base.resize(size, Image.Resampling.BOX)
    return base.convert("RGB")


def _outline(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) mask -> its one-pixel inner boundary at overlay ``size`` (W', H'), bool (H', W')."""
    from PIL import Image
    from scipy import ndimage

    small = Image.fromarray(_binary(mask).astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
    m = np.asarray(small) > 127
    return m & ~ndimage.binary_erosion(m)


def write_overlay(path: PathLike, radiograph_pixels: np.ndarray,
                  contours: Mapping[str, np.ndarray] | None = None,
                  masks: Mapping[str, np.ndarray] | None = None, max_side: int = 1024) -> None:
    """Write an RGB PNG of the radiograph with structure contours and mask outlines drawn on it.

    Images larger than ``max_side`` are downscaled (aspect kept) and the contours scaled with
    them. Each structure key has a fixed colour (:data:`STRUCTURE_COLOURS`); contours are drawn
    as closed lines, masks as one-pixel outlines.

    Args:
        path: destination ``.png``.
        radiograph_pixels: (H, W) float image in [0, 1], original frame.
        contours: {key: (n, 2) (x, y) in the original frame}; non-finite points are skipped.
        masks: {key: (H, W) bool mask in the original frame}.
        max_side: longest side of the written image.
    """
    from PIL import Image, ImageDraw

    rgb = _overlay_base(radiograph_pixels, max_side)
    h, w = np.shape(radiograph_pixels)
    if masks:
        canvas = np.array(rgb)
        for key, mask in masks.items():
            if np.shape(mask) != (h, w):
                raise ValueError(f"mask {key!r} has shape {np.shape(mask)}, image is {(h, w)}")
            canvas[_outline(mask, rgb.size)] = STRUCTURE_COLOURS.get(key, (255, 255, 255))
        rgb = Image.fromarray(canvas)
    draw = ImageDraw.Draw(rgb)
    scale = np.array([rgb.width / w, rgb.height / h])
    line_width = max(1, round(max(rgb.size) / 400))
    for key, contour in (contours or {}).items():
        xy = np.asarray(contour, dtype=np.float64).reshape(-1, 2)
        xy = xy[np.isfinite(xy).all(axis=1)] * scale - 0.5  # continuous -> Pillow pixel index
        if len(xy) >= 2:
            points = [tuple(p) for p in np.vstack([xy, xy[:1]])]
            draw.line(points, fill=STRUCTURE_COLOURS.get(key, (255, 255, 255)), width=line_width,
                      joint="curve")
    with atomic_write(path) as tmp:
        rgb.save(tmp, format="PNG")
