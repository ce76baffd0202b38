"""Fuzz targets: every parser that a stranger's file reaches, fed raw bytes.

A target writes the bytes to a file of its format's suffix and reads it. It returns normally
when the reader succeeds (the result is then checked) or raises one of the package's documented
errors (:class:`~anatomix.errors.ReadError`); anything else escapes, which is a crash. The
limit is small (:data:`MAX_PIXELS`) so that each execution stays fast.

Used by ``tests/fuzz/fuzz.py`` (atheris, ``make fuzz``) and by ``test_fuzz_corpus.py``, which
replays ``tests/fuzz_corpus/<target>/`` in the normal test run.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from anatomix.errors import ReadError

MAX_PIXELS = 1 << 20
"""Pixel limit of the fuzzed readers (1 M pixels)."""

_DIR = Path(tempfile.mkdtemp(prefix="anatomix-fuzz-"))
atexit.register(shutil.rmtree, _DIR, True)


def _file(data: bytes, suffix: str) -> Path:
    path = _DIR / f"{os.getpid()}{suffix}"
    path.write_bytes(data)
    return path


def _radiograph(suffix: str) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        from anatomix.io.read import MIN_SIDE, read_radiograph

        try:
            rad = read_radiograph(_file(data, suffix), MAX_PIXELS)
        except ReadError:
            return
        px = rad.pixels
        assert px.dtype == np.float32 and px.ndim == 2 and min(px.shape) >= MIN_SIDE
        assert px.size <= MAX_PIXELS and np.isfinite(px).all() and px.min() >= 0 and px.max() <= 1
    return target


def mask(data: bytes) -> None:
    """:func:`anatomix.io.read_mask` of a PNG."""
    from anatomix.io.read import read_mask

    try:
        m = read_mask(_file(data, ".png"), MAX_PIXELS)
    except ReadError:
        return
    assert m.dtype == bool and m.ndim == 2


def chexmask(data: bytes) -> None:
    """Every row of a CheXmask CSV, with its masks decoded (as ``anatomix qc`` does)."""
    from anatomix.io.chexmask import iter_chexmask_csv

    try:
        for row in iter_chexmask_csv(_file(data, ".csv"), MAX_PIXELS):
            masks = row.masks()
            assert all(m.shape == (row.height, row.width) for m in masks.values())
            assert row.landmarks is None or (row.landmarks.ndim == 2 and row.landmarks.shape[1] == 2)
    except ReadError:
        return
    except ValueError as e:  # rle_decode documents ValueError for a run outside the mask
        if "RLE" not in str(e):
            raise


def dicom_seg(data: bytes) -> None:
    """:func:`anatomix.io.dicom_seg.read_dicom_seg` (plain pydicom, as ``anatomix qc`` reads SEGs)."""
    from anatomix.io.dicom_seg import read_dicom_seg

    try:
        seg = read_dicom_seg(_file(data, ".dcm"), MAX_PIXELS)
    except ReadError:
        return
    shapes = {m.shape for m in seg.masks.values()}
    assert len(shapes) <= 1 and all(m.dtype == bool for m in seg.masks.values())
    assert not shapes or next(iter(shapes))[0] * next(iter(shapes))[1] <= MAX_PIXELS


TARGETS: dict[str, Callable[[bytes], None]] = {
    "png": _radiograph(".png"), "jpeg": _radiograph(".jpg"), "tiff": _radiograph(".tif"),
    "dicom": _radiograph(".dcm"), "nifti": _radiograph(".nii"), "nifti_gz": _radiograph(".nii.gz"),
    "npy": _radiograph(".npy"), "mask": mask, "chexmask": chexmask, "dicom_seg": dicom_seg,
}
"""Target name (also its corpus folder under ``tests/fuzz_corpus``) -> target."""
