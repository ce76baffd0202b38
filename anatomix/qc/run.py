"""QC over a whole source: what ``anatomix qc`` does, callable from Python.

::

    from anatomix.qc.run import run_qc
    summary = run_qc("masks.csv.gz", "qc_out", images="images/")
    print(summary.line())          # "3 images: 2 pass, 1 flagged -> qc_out/qc.csv, ..."
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from anatomix.io.atomic import atomic_write
from anatomix.limits import MAX_PIXELS
from anatomix.qc.assess import QC_COLUMNS, assess, format_row
from anatomix.qc.inputs import QCItem, source_units
from anatomix.qc.rca import load_references

CHUNK = 4
"""Masks checked per engine call (a Ray task): enough to hide a task's overhead behind RCA."""

QC_TABLE = "qc.csv"
"""Name of the QC table in the output folder."""


@dataclass(frozen=True)
class QCSummary:
    """What :func:`run_qc` did.

    Attributes:
        images: images checked (unreadable ones included: they count as flagged).
        passed: images whose ``qc_pass`` is true.
        table: path of ``qc.csv``.
        report: path of the HTML report, or None when none was written.
    """

    images: int
    passed: int
    table: Path
    report: Optional[Path] = None

    @property
    def flagged(self) -> int:
        return self.images - self.passed

    def line(self) -> str:
        """One line for a person: counts and where the outputs are."""
        msg = f"{self.images} images: {self.passed} pass, {self.flagged} flagged -> {self.table}"
        return msg if self.report is None else f"{msg}, {self.report}"


@dataclass
class Checked:
    """One checked mask set: its QC row and, for the report, its thumbnail.

    Attributes:
        image_id, path: the item's id and the file its masks came from ("" when unreadable).
        row: the QC figures (:data:`~anatomix.qc.assess.QC_COLUMNS`).
        thumb: the report's thumbnail (PIL image), or None.
    """

    image_id: str
    path: str
    row: dict
    thumb: Any = None


@dataclass
class QCTask:
    """QC of chunks of a source's units: the :class:`~anatomix.batch.engines.ChunkTask` that
    every engine runs (read each unit, assess it, make its thumbnail)."""

    load: Callable[[Any], QCItem]
    references: Any = None
    rca: bool = True
    k: int = 4
    segmenter: Any = None
    thumbnails: bool = True

    def open(self) -> Callable[[list], list[Checked]]:
        return lambda units: [self.check(self.load(u)) for u in units]

    def check(self, item: QCItem) -> Checked:
        """Assess one item (an unreadable one gets a failing row that says why)."""
        from anatomix.qc.report import thumbnail

        if item.seg is None:
            row = {c: float("nan") for c in QC_COLUMNS}
            row.update(qc_pass=False, qc_reasons=f"unreadable({item.error})", rca_references="")
            path = ""
        else:
            row = assess(item.seg, item.pixels, references=self.references, run_rca=self.rca, k=self.k,
                         segmenter=self.segmenter)
            path = str(item.seg.path or "")
        masks = item.seg.masks if item.seg else None
        thumb = thumbnail(item.pixels, masks or {}) if self.thumbnails and (masks or item.pixels is not None) else None
        return Checked(item.image_id, path, row, thumb)


def run_qc(source: Union[str, os.PathLike], out: Union[str, os.PathLike] = "qc_out", *,
           images: Union[str, os.PathLike, None] = None, reference: Union[str, os.PathLike, None] = None,
           k: int = 4, flip_model=None, rca: bool = True, report: bool = True, report_max: int = 1000,
           limit: Optional[int] = None, max_pixels: int = MAX_PIXELS, trust: bool = False,
           engine=None, progress: Optional[bool] = False) -> QCSummary:
    """Check every mask set of ``source``; write ``out/qc.csv`` and ``out/report/index.html``.

    Args:
        source: a CheXmask CSV (``.csv``/``.csv.gz``: RLE mask columns and/or ``Landmarks``), a
            folder of images with ``<stem>_lungR.png``, ``<stem>_lungL.png``, ``<stem>_heart.png``
            masks next to them, or DICOM-SEG files (a ``.dcm`` file or a folder holding SEGs); see
            :func:`anatomix.qc.inputs.iter_source`.
        out: output folder (created).
        images: folder of the images of a CheXmask CSV, or of the DICOM sources of SEG files.
        reference: RCA reference set (labelled folder or ``.npz``); default the bundled atlases.
        k: references registered per image (RCA).
        flip_model: segmenter for the mirrored-image test (registry name, checkpoint path, or a
            loaded segmenter); None: no flip test.
        rca: compute RCA (the slow part); False: plausibility and shape checks only.
        report: write the HTML report.
        report_max: images shown in the report (the worst ones); its summary counts all.
        limit: check only the first ``limit`` images.
        max_pixels: images and masks larger than this are refused (rows flagged ``unreadable``).
        trust: load a ``flip_model`` checkpoint that needs a full unpickle (RUNS CODE FROM THE FILE).
        engine: where the checks run (:mod:`anatomix.batch.engines`); default this process.
            Every engine gives the same ``qc.csv`` and report.
        progress: a progress bar on stderr (images/s, ETA); None: when stderr is a terminal.

    Returns:
        :class:`QCSummary`. ``qc.csv`` holds ``image_id``, ``path``, then :data:`QC_COLUMNS`, one
        row per image in source order; it appears (atomically) when every image is checked.
        Masks that fail are not an error: read the ``qc_pass`` column.

    Raises:
        anatomix.errors.UsageError: ``source`` is not a recognised kind.
        anatomix.errors.AnatomixError: the reference set or the flip model cannot be loaded.
    """
    from anatomix.batch.engines import LocalEngine, chunked, progress_bar
    from anatomix.qc.report import ReportWriter

    src = Path(source)
    units, load = source_units(src, images, max_pixels)
    refs = load_references(reference) if rca else None
    segmenter = flip_model
    if isinstance(flip_model, (str, os.PathLike)):
        from anatomix.models import load_segmenter

        segmenter = load_segmenter(os.fspath(flip_model), trust=trust)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer_report = ReportWriter(out_dir / "report", f"anatomix QC: {src.name}",
                                 max_cards=report_max) if report else None
    task = QCTask(load, refs, rca, k, segmenter, thumbnails=report)
    chunks = chunked(itertools.islice(units, limit), CHUNK)
    table = out_dir / QC_TABLE
    n = n_pass = 0
    with atomic_write(table) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["image_id", "path", *QC_COLUMNS])
        writer.writeheader()
        results = itertools.chain.from_iterable((engine or LocalEngine()).map_chunks(task, chunks))
        total = len(units) if hasattr(units, "__len__") else None
        for checked in progress_bar(results, "qc", min(total, limit or total) if total is not None else limit,
                                    progress):
            writer.writerow({"image_id": checked.image_id, "path": checked.path, **format_row(checked.row)})
            if writer_report is not None:
                writer_report.add(checked.image_id, checked.row, path=checked.path, thumb=checked.thumb)
            n += 1
            n_pass += bool(checked.row["qc_pass"])
        f.flush()
        os.fsync(f.fileno())
    report_path = writer_report.close() if writer_report is not None else None
    return QCSummary(n, n_pass, table, report_path)
