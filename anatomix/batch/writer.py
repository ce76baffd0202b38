"""One image's outputs: masks (PNG, NIfTI, DICOM-SEG), overlay, CheXmask row and QC cells.

:class:`ImageWriter` runs in the batch's writer threads. QC is a :class:`QCHook`: its columns
are appended to every row, its ``assess`` fills them; cells are formatted by
:func:`anatomix.qc.format_row`, the one formatter of QC values.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anatomix.anatomy import STRUCTURE_BY_KEY, landmarks_to_masks
from anatomix.batch.outdir import DICOM_SEG, Outputs
from anatomix.batch.records import BatchItem
from anatomix.errors import AnatomixError


@dataclass(frozen=True)
class QCHook:
    """QC columns of a batch and the function that fills them.

    Attributes:
        columns: column names, appended to each row in this order.
        assess: ``assess(seg, pixels, node_std=None, segmenter=None) -> {column: value}`` for one
            :class:`~anatomix.segmentation.Segmentation` and its (H, W) original-frame pixels;
            ``segmenter`` is the batch's model (behind the lock its own calls take), for checks
            that run it again (the mirrored-image test). Missing columns are left empty.
    """

    columns: tuple[str, ...]
    assess: Callable[..., Mapping[str, Any]]


def default_qc() -> QCHook:
    """:data:`anatomix.qc.QC_COLUMNS` filled by :func:`anatomix.qc.assess`."""
    from anatomix.qc import QC_COLUMNS, assess

    return QCHook(tuple(QC_COLUMNS), assess)


class ImageWriter:
    """Writes one image's files and builds its CSV row (runs in the writer pool)."""

    def __init__(self, header: Sequence[str], outputs: Outputs, qc: QCHook | None, segmenter=None):
        self.header, self.outputs, self.qc, self.segmenter = list(header), outputs, qc, segmenter
        self.qc_failures = 0
        self.algorithm = ("anatomix", "")  # (name, version) named by DICOM-SEG outputs
        self.notes: dict[str, tuple[str, str]] = {}  # image_id -> (path, note) of this run
        self._lock = threading.Lock()

    def __call__(self, item: BatchItem, radiograph, seg) -> list[str]:
        from anatomix.io.chexmask import format_landmarks, rle_encode
        from anatomix.io.write import write_mask_nifti, write_mask_png, write_overlay

        shape = tuple(radiograph.shape)
        if not seg.masks and seg.template is not None and seg.landmarks is not None:
            seg.masks = landmarks_to_masks(seg.landmarks, shape, seg.template)  # predicted without masks
        masks = {k: np.asarray(seg.masks[k]).astype(bool, copy=False) for k in self.outputs.structures
                 if k in seg.masks}
        missing = [k for k in self.outputs.structures if k not in masks]
        if missing:
            raise AnatomixError(f"segmenter returned no mask for {missing}")
        for k, m in masks.items():
            if m.shape != shape:
                raise AnatomixError(f"mask {k!r} has shape {m.shape}, image is {shape}")
        for fmt in self.outputs.formats:
            if fmt == DICOM_SEG:
                self._write_seg(item, masks)
                continue
            for k, m in masks.items():
                target = self.outputs.mask(item.image_id, k, fmt)
                if fmt == "png":
                    write_mask_png(target, m)
                else:
                    write_mask_nifti(target, m, like=radiograph)
        landmarks = None if seg.landmarks is None else np.asarray(seg.landmarks, dtype=np.float64)
        has_landmarks = landmarks is not None and landmarks.size > 0 and np.isfinite(landmarks).all()
        if self.outputs.overlays:
            contours = seg.template.split(landmarks) if has_landmarks and seg.template is not None else None
            write_overlay(self.outputs.overlay(item.image_id), radiograph.pixels, contours=contours,
                          masks=None if contours else masks)
        cells: dict[str, str] = {
            "image_id": item.image_id, "path": str(item.path), "Height": str(shape[0]), "Width": str(shape[1]),
            "Landmarks": format_landmarks(landmarks.reshape(-1, 2)) if has_landmarks else "",
        }
        for k, m in masks.items():
            cells[STRUCTURE_BY_KEY[k].label] = rle_encode(m)
        if self.qc is not None:
            from anatomix.qc import format_row

            try:
                values = self.qc.assess(seg, radiograph.pixels, node_std=seg.node_std, segmenter=self.segmenter)
                formatted = format_row({c: values.get(c) for c in self.qc.columns})
                cells.update(formatted)
            except Exception:  # noqa: BLE001 - QC never costs the user a segmentation
                with self._lock:
                    self.qc_failures += 1
        return [cells.get(c, "") for c in self.header]

    def _write_seg(self, item: BatchItem, masks: Mapping[str, np.ndarray]) -> None:
        """The image's DICOM-SEG, or a note when its source cannot be referenced by one."""
        from anatomix.io.dicom_seg import NotASegSource, source_header, write_dicom_seg

        try:
            header = source_header(item.path)
        except NotASegSource as e:
            with self._lock:
                self.notes[item.image_id] = (str(item.path), str(e))
            return
        with self._lock:
            self.notes.pop(item.image_id, None)
        name, version = self.algorithm
        write_dicom_seg(self.outputs.seg(item.image_id), masks, item.path, algorithm=name, version=version,
                        header=header)
