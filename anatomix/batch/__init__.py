"""Batch segmentation: radiographs in, masks, landmarks, a CheXmask CSV and QC columns out.

:func:`segment_batch` is what ``anatomix segment`` runs (contract and output layout:
:mod:`anatomix.batch.segment`). Inputs are expanded by :mod:`anatomix.io.inputs`; models are
loaded by :func:`anatomix.models.load_segmenter`.
"""

from anatomix.batch.outdir import (
           CSV_NAME,
           FORMATS,
           MASKS_DIR,
           NOTES_NAME,
           OVERLAYS_DIR,
           RUN_NAME,
           SEG_DIR,
)
from anatomix.batch.records import BatchItem, BatchSummary
from anatomix.batch.segment import segment_batch
from anatomix.batch.writer import QCHook, default_qc

__all__ = ["CSV_NAME", "FORMATS", "MASKS_DIR", "NOTES_NAME", "OVERLAYS_DIR", "RUN_NAME", "SEG_DIR",
           "BatchItem", "BatchSummary", "QCHook", "default_qc", "segment_batch"]
