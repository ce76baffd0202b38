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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from anatomix.io.atomic import atomic_write
from anatomix.limits import MAX_PIXELS
from anatomix.qc.assess import QC_COLUMNS, assess, format_row
from anatomix.qc.inputs import iter_source
from anatomix.qc.rca import load_references

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


def run_qc(source: Union[str, os.PathLike], out: Union[str, os.PathLike] = "qc_out", *,
           images: Union[str, os.PathLike, None] = None, reference: Union[str, os.PathLike, None] = None,
           k: int = 4, flip_model=None, rca: bool = True, report: bool = True, report_max: int = 1000,
           limit: Optional[int] = None, max_pixels: int = MAX_PIXELS, trust: bool = False) -> QCSummary:
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

    Returns:
        :class:`QCSummary`. ``qc.csv`` holds ``image_id``, ``path``, then :data:`QC_COLUMNS`, one
        row per image in source order; it appears (atomically) when every image is checked.
        Masks that fail are not an error: read the ``qc_pass`` column.

    Raises:
        anatomix.errors.UsageError: ``source`` is not a recognised kind.
        anatomix.errors.AnatomixError: the reference set or the flip model cannot be loaded.
    """
    from anatomix.qc.report import ReportWriter

    src = Path(source)
    items = iter_source(src, images, max_pixels)
    refs = load_references(reference) if rca else None
    segmenter = flip_model
    if isinstance(flip_model, (str, os.PathLike)):
        from anatomix.models import load_segmenter

        segmenter = load_segmenter(os.fspath(flip_model), trust=trust)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer_report = ReportWriter(out_dir / "report", f"anatomix QC: {src.name}",
                                 max_cards=report_max) if report else None
    table = out_dir / QC_TABLE
    n = n_pass = 0
    with atomic_write(table) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["image_id", "path", *QC_COLUMNS])
        writer.writeheader()
        for item in itertools.islice(items, limit):
            if item.seg is None:
                row = {c: float("nan") for c in QC_COLUMNS}
                row.update(qc_pass=False, qc_reasons=f"unreadable({item.error})", rca_references="")
                path = ""
            else:
                row = assess(item.seg, item.pixels, references=refs, run_rca=rca, k=k, segmenter=segmenter)
                path = str(item.seg.path or "")
            writer.writerow({"image_id": item.image_id, "path": path, **format_row(row)})
            if writer_report is not None:
                writer_report.add(item.image_id, row, item.pixels, item.seg.masks if item.seg else None, path)
            n += 1
            n_pass += bool(row["qc_pass"])
        f.flush()
        os.fsync(f.fileno())
    report_path = writer_report.close() if writer_report is not None else None
    return QCSummary(n, n_pass, table, report_path)
