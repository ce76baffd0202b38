"""Masks that anatomix did not make, as (Segmentation, image) pairs for QC.

Three sources (:func:`iter_source` tells them apart):

- a **folder** of images with their masks next to them: ``<stem>.png`` (any readable radiograph
  format) with ``<stem>_lungR.png``, ``<stem>_lungL.png``, ``<stem>_heart.png`` (nonzero =
  foreground, so 0/1 and 0/255 both work) and optionally ``<stem>_landmarks.npy`` ((120|166, 2)
  (x, y) in the image's pixel frame); masks-only folders (no image) are not supported, use a
  CheXmask CSV for that;
- a **CheXmask CSV** (``.csv`` / ``.csv.gz``, read by :mod:`anatomix.io.chexmask`), with an
  optional folder of the images: an image is found as ``<images>/<image_id>`` (CheXpert's ``Path``
  is relative) or ``<images>/<image_id><suffix>`` for any supported suffix. Rows whose image is
  not found are still checked, without the image-based figures (RCA, contrast, orientation);
- **DICOM-SEG** files (a SEG file, or a folder holding SEGs), with an optional folder of the
  DICOM sources they reference.

A source that cannot be read yields an item with ``seg=None`` and the reason in ``error``: one bad
file never stops a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from anatomix.anatomy import FULL, LUNGS_HEART, STRUCTURE_KEYS
from anatomix.errors import UsageError
from anatomix.limits import MAX_PIXELS
from anatomix.segmentation import Segmentation


@dataclass
class QCItem:
    """One mask set to check.

    Attributes:
        seg: the segmentation (masks in the image's frame); None when it could not be read.
        pixels: (H, W) float32 image or None.
        error: why the item could not be read, or None.
    """

    image_id: str
    seg: Optional[Segmentation]
    pixels: Optional[np.ndarray]
    error: Optional[str] = None


def _template_for(landmarks: Optional[np.ndarray]):
    if landmarks is None:
        return LUNGS_HEART, np.zeros((0, 2))
    n = len(landmarks)
    if n == FULL.n_nodes:
        return FULL, np.asarray(landmarks, np.float64)
    if n == LUNGS_HEART.n_nodes:
        return LUNGS_HEART, np.asarray(landmarks, np.float64)
    return LUNGS_HEART, np.zeros((0, 2))  # unknown node layout: contours are traced from masks


def _resize_to(pixels: np.ndarray, shape) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(np.asarray(pixels, np.float32), mode="F").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(img, np.float32)


def iter_folder(folder: Path | str, max_pixels: int = MAX_PIXELS) -> Iterator[QCItem]:
    """QC items of a folder of images with ``<stem>_<structure>.png`` masks next to them
    (images and masks of at most ``max_pixels``)."""
    from anatomix.data.cases import folder_cases

    return (load_case(case, max_pixels) for case in folder_cases(folder))


def load_case(case, max_pixels: int = MAX_PIXELS) -> QCItem:
    """The QC item of one :class:`~anatomix.data.cases.SegCase` of a folder (unreadable: ``seg=None``)."""
    from anatomix.io.read import load_npy, read_mask, read_radiograph

    try:
        if not case.masks:
            raise ValueError("no lungR/lungL/heart mask PNG")
        pixels = read_radiograph(case.image, max_pixels).pixels
        masks = {k: read_mask(p, max_pixels) for k, p in case.masks.items() if k in STRUCTURE_KEYS}
        if not masks:
            raise ValueError("no lungR/lungL/heart mask PNG")
        for k, m in masks.items():
            if m.shape != pixels.shape:
                raise ValueError(f"mask {k} is {masks[k].shape[:2]}, image is {pixels.shape}")
        lm = np.asarray(load_npy(case.landmarks, 2 * FULL.n_nodes)) if case.landmarks is not None else None
        template, lm = _template_for(lm)
        seg = Segmentation(case.case_id, case.image, pixels.shape, template, lm, masks)
        return QCItem(case.case_id, seg, pixels)
    except Exception as e:  # one bad file must not stop a batch
        return QCItem(case.case_id, None, None, f"{type(e).__name__}: {e}")


def find_image(images: Optional[Path], image_id: str) -> Optional[Path]:
    """The image file of ``image_id`` under ``images``, or None."""
    from anatomix.io.read import SUPPORTED_SUFFIXES

    if images is None:
        return None
    p = images / image_id
    if p.is_file():
        return p
    for suffix in SUPPORTED_SUFFIXES:
        for cand in (images / f"{image_id}{suffix}", images / f"{image_id}{suffix.upper()}"):
            if cand.is_file():
                return cand
    return None


def _row_path(row) -> Optional[Path]:
    """The image named by a row's ``path`` column (as ``anatomix segment`` writes it), when that
    file exists; else None."""
    p = (row.extra or {}).get("path", "")
    return Path(p) if p and Path(p).is_file() else None


def iter_chexmask(csv_path: Path | str, images: Optional[Path | str] = None,
                  max_pixels: int = MAX_PIXELS) -> Iterator[QCItem]:
    """QC items of a CheXmask CSV; images (optional) looked up under ``images``, else at the row's
    ``path`` column when that file exists (the ``segmentations.csv`` of ``anatomix segment``). Rows and
    images larger than ``max_pixels`` are refused (unreadable items)."""
    from anatomix.io.chexmask import iter_chexmask_csv

    images = Path(images) if images is not None else None
    return (load_chexmask_row(row, images, max_pixels) for row in iter_chexmask_csv(csv_path, max_pixels))


def load_chexmask_row(row, images: Optional[Path] = None, max_pixels: int = MAX_PIXELS) -> QCItem:
    """The QC item of one :class:`~anatomix.io.chexmask.ChexmaskRow` (unreadable: ``seg=None``).

    A row whose mask cells are all empty but which has landmarks gets masks rasterised from them.
    An image whose size differs from the row's Height x Width is resampled to it (the masks'
    frame is the one that counts).
    """
    from anatomix.anatomy import landmarks_to_masks
    from anatomix.io.read import read_radiograph

    try:
        shape = (row.height, row.width)
        masks = {k: m for k, m in row.masks().items() if k in STRUCTURE_KEYS}
        template, lm = _template_for(row.landmarks)
        if (not masks or not any(m.any() for m in masks.values())) and len(lm):
            masks = {k: v for k, v in landmarks_to_masks(lm, shape, template).items() if k in STRUCTURE_KEYS}
        path = find_image(images, row.image_id) or _row_path(row)
        pixels = None
        if path is not None:
            pixels = read_radiograph(path, max_pixels).pixels
            if pixels.shape != shape:
                pixels = _resize_to(pixels, shape)
        seg = Segmentation(row.image_id, path, shape, template, lm, masks)
        return QCItem(row.image_id, seg, pixels)
    except Exception as e:  # noqa: BLE001 - one bad row must not stop a batch
        return QCItem(row.image_id, None, None, f"{type(e).__name__}: {e}")


def iter_dicom_seg(source: Path | str, images: Path | str | None = None,
                   max_pixels: int = MAX_PIXELS) -> Iterator[QCItem]:
    """QC items of DICOM-SEG files (a SEG file or a folder searched recursively).

    Each SEG's masks are read with pydicom (:func:`anatomix.io.dicom_seg.read_dicom_seg`, no
    highdicom needed). Its image is the DICOM under ``images`` whose SOP Instance UID the SEG
    references (else the SEG's folder is searched); without it the masks are still checked,
    without the image-based figures. The item's id is the SEG file's stem.
    """
    units, load = _dicom_seg_units(source, images, max_pixels)
    return (load(f) for f in units)


def _dicom_seg_units(source, images, max_pixels: int):
    from anatomix.io.dicom_seg import find_seg_files, index_sources

    files = find_seg_files(source)
    roots = [Path(images)] if images is not None else [Path(source) if Path(source).is_dir() else Path(source).parent]
    return files, partial(load_dicom_seg, sources=index_sources(roots), max_pixels=max_pixels)


def load_dicom_seg(f: Path, sources: Mapping[str, Path], max_pixels: int = MAX_PIXELS) -> QCItem:
    """The QC item of one SEG file; ``sources``: SOP Instance UID -> DICOM path (unreadable: ``seg=None``)."""
    from anatomix.io.dicom_seg import read_dicom_seg
    from anatomix.io.read import read_radiograph

    image_id = f.name.removesuffix(".dcm").removesuffix(".seg")
    try:
        seg_file = read_dicom_seg(f, max_pixels)
        masks = {k: m for k, m in seg_file.masks.items() if k in STRUCTURE_KEYS}
        if not masks:
            raise ValueError("no lungR/lungL/heart segment")
        path = next((sources[u] for u in seg_file.referenced_sop_instance_uids if u in sources), None)
        pixels = None
        if path is not None:
            pixels = read_radiograph(path, max_pixels).pixels
            if pixels.shape != seg_file.shape:
                raise ValueError(f"SEG is {seg_file.shape}, its source image is {pixels.shape}")
        template, lm = _template_for(None)
        seg = Segmentation(image_id, path or f, seg_file.shape, template, lm, masks)
        return QCItem(image_id, seg, pixels)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop a batch
        return QCItem(image_id, None, None, f"{type(e).__name__}: {e}")


def source_units(source: Path | str, images: Path | str | None = None,
                 max_pixels: int = MAX_PIXELS) -> tuple[Iterable, Callable[[Any], QCItem]]:
    """What a source holds, cheaply, and how to read one of it: ``(units, load)``.

    ``units`` (lazy, in source order) are folder cases, CheXmask rows or SEG files; ``load(unit)``
    reads one into a :class:`QCItem` (never raises: an unreadable unit is an item with
    ``seg=None``). Both pickle, so units can be read where they are checked (a Ray worker).
    Sources: DICOM-SEG (a SEG file, or a folder holding SEGs), a folder of images with their mask
    PNGs, or a CheXmask ``.csv`` / ``.csv.gz``.

    Args:
        source: the file or folder.
        images: folder of the images of a CheXmask CSV, or of the DICOM sources of SEG files.
        max_pixels: images and masks larger than this are refused (unreadable items).

    Raises:
        anatomix.errors.UsageError: ``source`` is none of these.
    """
    from anatomix.data.cases import folder_cases
    from anatomix.io.chexmask import iter_chexmask_csv
    from anatomix.io.dicom_seg import find_seg_files, is_dicom_seg

    src = Path(source)
    if (src.is_file() and is_dicom_seg(src)) or (src.is_dir() and find_seg_files(src)):
        return _dicom_seg_units(src, images, max_pixels)
    if src.is_dir():
        return folder_cases(src), partial(load_case, max_pixels=max_pixels)
    if src.name.lower().endswith((".csv", ".csv.gz")):
        images = Path(images) if images is not None else None
        return iter_chexmask_csv(src, max_pixels), partial(load_chexmask_row, images=images, max_pixels=max_pixels)
    raise UsageError(f"{src}: expected a folder, a CheXmask .csv/.csv.gz or a DICOM-SEG file")


def iter_source(source: Path | str, images: Path | str | None = None,
                max_pixels: int = MAX_PIXELS) -> Iterator[QCItem]:
    """QC items of any source (see :func:`source_units`), read one by one in source order.

    Raises:
        anatomix.errors.UsageError: ``source`` is not a recognised kind.
    """
    units, load = source_units(source, images, max_pixels)
    return (load(u) for u in units)
