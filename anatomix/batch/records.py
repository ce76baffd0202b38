"""Records of a segmentation batch: one image to do (:class:`BatchItem`) and what a run did
(:class:`BatchSummary`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from anatomix.batch.outdir import CSV_NAME
from anatomix.io.inputs import ERRORS_NAME, InputError, resolved_key


@dataclass(frozen=True)
class BatchItem:
    """One image to segment.

    Attributes:
        path: absolute path as found (symlinks not resolved); written to the ``path`` column.
        image_id: unique id in this output folder (file stem, ``_<n>`` added on collisions).
    """

    path: Path
    image_id: str

    @property
    def key(self) -> str:
        """Resolved path: what identifies the image across runs."""
        return resolved_key(self.path)


@dataclass
class BatchSummary:
    """What a batch did.

    Attributes:
        out_dir: the output folder.
        total: inputs found (images plus entries that could not even be expanded).
        segmented: images segmented and written in this run.
        skipped: images already finished by an earlier run (kept as they were).
        errors: every input that failed in this run (also in ``errors.csv``).
        seconds: wall time of the run.
        timings: seconds spent by the main thread waiting for decoding (``read_wait``), in the
            segmenter (``predict``) and waiting for writers (``write_wait``); with ``workers=0``
            the decoding and writing themselves.
        qc_columns: the QC columns written (empty when QC was off or unavailable).
        qc_failures: images whose QC raised (their QC cells are empty).
    """

    out_dir: Path
    total: int = 0
    segmented: int = 0
    skipped: int = 0
    errors: list[InputError] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: {"read_wait": 0.0, "predict": 0.0,
                                                                "write_wait": 0.0})
    qc_columns: tuple[str, ...] = ()
    qc_failures: int = 0

    @property
    def failed(self) -> int:
        return len(self.errors)

    @property
    def exit_code(self) -> int:
        """0 when every input is segmented (now or before), 1 when some failed."""
        return 1 if self.errors else 0

    @property
    def csv_path(self) -> Path:
        return self.out_dir / CSV_NAME

    @property
    def errors_path(self) -> Path:
        return self.out_dir / ERRORS_NAME

    def line(self) -> str:
        """One-line summary for the end of a run."""
        rate = self.segmented / self.seconds if self.seconds > 0 else 0.0
        parts = [f"{self.segmented} segmented"]
        if self.skipped:
            parts.append(f"{self.skipped} already done")
        parts.append(f"{self.failed} failed" + (f" (see {self.errors_path})" if self.failed else ""))
        text = (f"{', '.join(parts)} of {self.total} inputs in {_duration(self.seconds)} "
                f"({rate:.2f} images/s) -> {self.csv_path}")
        if self.qc_failures:
            text += f"; QC failed on {self.qc_failures} images (cells left empty)"
        return text


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{seconds:.1f}s")
