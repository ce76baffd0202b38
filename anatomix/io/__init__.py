"""Radiograph input/output: readers, writers, atomic writes and the model-frame geometry.

- :func:`read_radiograph` reads PNG/JPEG/TIFF, DICOM, NIfTI and ``.npy`` into a
  :class:`Radiograph` (float32 (H, W) pixels in [0, 1], original frame).
- :class:`SquareFrame` maps between the original frame and a square model frame.
- CheXmask CSV codec: RLE masks, the ``Landmarks`` column, streaming reader, atomic writer
  (the resumable per-row writer of a batch is :mod:`anatomix.batch.outdir`).
- :mod:`anatomix.io.inputs`: expand files/folders/globs/lists, image ids, ``errors.csv``.
- ``write_*`` write masks (PNG, NIfTI), landmarks (JSON) and overlays (PNG), atomically.
"""

from anatomix.io.atomic import atomic_write
from anatomix.io.chexmask import (
    ChexmaskRow,
    format_landmarks,
    iter_chexmask_csv,
    parse_landmarks,
    read_chexmask_csv,
    rle_decode,
    rle_encode,
    write_chexmask_csv,
)
from anatomix.io.geometry import SquareFrame
from anatomix.io.read import (
    MAX_PIXELS,
    MIN_SIDE,
    SUPPORTED_SUFFIXES,
    display_to_nifti,
    nifti_to_display,
    read_mask,
    read_radiograph,
)
from anatomix.io.record import Radiograph
from anatomix.io.write import (
    STRUCTURE_COLOURS,
    write_landmarks_json,
    write_mask_nifti,
    write_mask_png,
    write_overlay,
)

__all__ = [
    "ChexmaskRow",
    "format_landmarks",
    "iter_chexmask_csv",
    "parse_landmarks",
    "read_chexmask_csv",
    "read_mask",
    "rle_decode",
    "rle_encode",
    "write_chexmask_csv",
    "MAX_PIXELS",
    "MIN_SIDE",
    "STRUCTURE_COLOURS",
    "SUPPORTED_SUFFIXES",
    "Radiograph",
    "SquareFrame",
    "atomic_write",
    "display_to_nifti",
    "nifti_to_display",
    "read_radiograph",
    "write_landmarks_json",
    "write_mask_nifti",
    "write_mask_png",
    "write_overlay",
]
