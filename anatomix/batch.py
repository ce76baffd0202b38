"""Batch segmentation: a folder of radiographs in, masks, landmarks and a CheXmask CSV out.

:func:`segment_batch` is what ``anatomix segment`` runs. Its contract:

- **Inputs** (:func:`expand_inputs`): files, directories (walked recursively), glob patterns and
  ``.txt`` / ``.csv`` lists of paths. A bad entry (missing path, dangling link, unmatched glob, a
  directory named like an image) never stops the batch: it becomes a row of ``errors.csv``.
- **Outputs** in ``out_dir``:

  - ``segmentations.csv`` in the CheXmask layout: ``image_id``, ``path``, ``Height``, ``Width``,
    ``Landmarks`` (JSON [x, y] in original pixels), ``Right Lung``, ``Left Lung``, ``Heart`` (RLE
    at original resolution, row-major, 1-based starts; more mask columns when the model has more
    structures), then the QC columns of :mod:`anatomix.qc` when it provides ``assess``;
  - ``masks/<image_id>_<structure>.png`` (0/255, original size) and/or ``.nii.gz``;
  - ``dicom-seg/<image_id>.dcm`` with format ``dicom-seg`` (:mod:`anatomix.io.dicom_seg`, extra
    ``anatomix[dicom]``): one DICOM-SEG per DICOM input; an input that a SEG cannot reference
    (not DICOM) keeps its other outputs and gets a line in ``notes.csv`` (``image_id``, ``path``,
    ``note``) instead;
  - ``overlays/<image_id>.png`` when asked for;
  - ``errors.csv`` (``path``, ``reason``): every input that could not be processed.

- **Resumable and safe.** Every output file is written under a temporary name and renamed; the
  CSV row of an image is appended (flushed and fsynced) only after all its files exist, so the row
  is the image's completion marker. A rerun on the same ``out_dir`` keeps finished images (row
  present and files on disk) and redoes the rest; a partial last line left by a kill is dropped
  first. Image ids are a pure function of the sorted input set, and rows are appended in sorted
  input order, so a run that is killed and resumed any number of times ends with the same files
  and the same CSV as an uninterrupted one. One run at a time per ``out_dir`` (a lock file).
- **Overlap.** With ``workers > 0`` a thread pool decodes images ahead of the model and another
  writes outputs (masks, RLE, overlays, QC) behind it, both through bounded windows; with
  ``workers=0`` everything runs in the calling thread.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Union,
)

import numpy as np

from anatomix.anatomy import landmarks_to_masks
from anatomix.errors import AnatomixError, ReadError
from anatomix.io.atomic import fsync_dir
from anatomix.io.inputs import (
    ERRORS_NAME,
    InputError,
    assign_image_ids,
    expand_inputs,
    image_stem,
    read_errors,
    resolved_key,
    write_errors,
)
from anatomix.io.tables import read_table, write_table
from anatomix.limits import MAX_PIXELS
from anatomix.models import model_identity

PathLike = Union[str, "os.PathLike[str]"]

CSV_NAME = "segmentations.csv"
MASKS_DIR = "masks"
OVERLAYS_DIR = "overlays"
LOCK_NAME = ".anatomix-segment.lock"
FORMATS: dict[str, str] = {"png": ".png", "nifti": ".nii.gz", "dicom-seg": ".dcm"}
"""Mask formats and the suffix of their files (``dicom-seg``: one file per image, all structures)."""
DICOM_SEG = "dicom-seg"
SEG_DIR = "dicom-seg"
NOTES_NAME = "notes.csv"
RUN_NAME = "run.json"
"""The model that wrote the folder (:func:`anatomix.models.model_identity`): a resume with another
model is refused, so one folder never mixes two models' results."""


# -- records -----------------------------------------------------------------------------------
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


# -- QC hook -----------------------------------------------------------------------------------
QCHook = tuple[Sequence[str], Callable[..., Mapping[str, Any]]]


def default_qc() -> QCHook | None:
    """(QC_COLUMNS, assess) from :mod:`anatomix.qc`, or None while it does not provide them.

    Cells are formatted by ``anatomix.qc.format_row`` when it exists (else :func:`_qc_cell`).
    When ``assess`` takes a ``segmenter`` (the mirrored-image test, one extra forward pass of a
    single image), the batch's segmenter is passed, behind the lock that the batch's own model
    calls take.
    """
    try:
        from anatomix import qc
    except ImportError:
        return None
    columns, assess = getattr(qc, "QC_COLUMNS", None), getattr(qc, "assess", None)
    if not columns or not callable(assess):
        return None
    format_row = getattr(qc, "format_row", None)
    takes_segmenter = _accepts(assess, "segmenter")

    def assess_formatted(seg, pixels, node_std=None, segmenter=None):
        extra = {"segmenter": segmenter} if takes_segmenter and segmenter is not None else {}
        values = assess(seg, pixels, node_std=node_std, **extra)
        return format_row(values) if callable(format_row) else values  # the QC module's cell text

    assess_formatted.takes_segmenter = takes_segmenter  # type: ignore[attr-defined]
    return tuple(columns), assess_formatted


def _qc_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else format(value, ".6g")
    if isinstance(value, (list, tuple)):
        return ";".join(_qc_cell(v) for v in value)
    return str(value)


# -- the output folder -------------------------------------------------------------------------
@contextmanager
def _lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` (released by the OS even on SIGKILL)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    f = open(out_dir / LOCK_NAME, "a")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise AnatomixError(f"{out_dir}: another 'anatomix segment' run is writing to this folder") from None
        yield
    finally:
        f.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Delete ``.<name>.tmp-<pid>-<hex>`` files of atomic writes whose process died."""
    for folder in (out_dir, out_dir / MASKS_DIR, out_dir / OVERLAYS_DIR, out_dir / SEG_DIR):
        if not folder.is_dir():
            continue
        for p in folder.glob(".*.tmp-*"):
            try:
                pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
            except (IndexError, ValueError):
                continue
            if pid == os.getpid() or not _pid_alive(pid):
                p.unlink(missing_ok=True)


class _Outputs:
    """File names and completeness checks of one output folder."""

    def __init__(self, out_dir: Path, structures: Sequence[str], formats: Sequence[str], overlays: bool):
        self.out_dir, self.structures, self.formats, self.overlays = out_dir, tuple(structures), tuple(formats), overlays
        self.notes: dict[str, tuple[str, str]] = {}  # image_id -> (path, note): no DICOM-SEG for it

    def seg(self, image_id: str) -> Path:
        return self.out_dir / SEG_DIR / f"{image_id}{FORMATS[DICOM_SEG]}"

    def mask(self, image_id: str, structure: str, fmt: str) -> Path:
        return self.out_dir / MASKS_DIR / f"{image_id}_{structure}{FORMATS[fmt]}"

    def overlay(self, image_id: str) -> Path:
        return self.out_dir / OVERLAYS_DIR / f"{image_id}.png"

    def files(self, image_id: str) -> list[Path]:
        out = [self.mask(image_id, s, f) for f in self.formats if f != DICOM_SEG for s in self.structures]
        if DICOM_SEG in self.formats and image_id not in self.notes:
            out.append(self.seg(image_id))
        return out + ([self.overlay(image_id)] if self.overlays else [])

    def complete(self, image_id: str) -> bool:
        for p in self.files(image_id):
            try:
                if p.stat().st_size == 0:
                    return False
            except OSError:
                return False
        return True


class _RowWriter:
    """Appends CSV rows to ``segmentations.csv``; flush + fsync on :meth:`sync`."""

    def __init__(self, path: Path):
        self._f = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
        self._w = csv.writer(self._f, lineterminator="\n")

    def write(self, cells: Sequence[str]) -> None:
        self._w.writerow(cells)

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()


def _claim_for_model(out: Path, identity: tuple[str, str], overwrite: bool) -> None:
    """Record ``identity`` in ``out/run.json``; refuse a folder that another model wrote.

    Raises:
        AnatomixError: ``run.json`` names another model (or version) and ``overwrite`` is off;
            the message says to use a new folder or ``--overwrite`` (which redoes this run's images).
    """
    import json

    from anatomix.io.atomic import atomic_write

    path = out / RUN_NAME
    record = {"model": identity[0], "version": identity[1]}
    if path.is_file() and not overwrite:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old != record:
            raise AnatomixError(
                f"{out} holds results of {old.get('model')} {old.get('version')}, this run is "
                f"{record['model']} {record['version']}: resuming would mix two models; use a new "
                f"output folder, or --overwrite to redo this run's images")
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def _prepare_csv(path: Path, header: list[str], items: Sequence[Path], outputs: _Outputs,
                 overwrite: bool) -> tuple[list[str], dict[str, str], set[str]]:
    """Bring an existing ``segmentations.csv`` into shape for this run.

    Keeps rows of images outside this run, and rows of this run's images that are finished
    (files present) unless ``overwrite``; drops the rest (and a partial last line), rewriting the
    file atomically when anything changed. Columns of an older file that this run does not write
    are kept (at the end); a file without a usable header is replaced.

    Returns:
        (the file's header, {resolved path: image_id} of finished images of this run,
        ids of the kept rows of other images).
    """
    keys = {resolved_key(p) for p in items}
    if not path.is_file():
        write_table(path, header, [])
        return header, {}, set()
    old_header, rows, changed = read_table(path)
    if not old_header or "image_id" not in old_header or "path" not in old_header:
        write_table(path, header, [])
        return header, {}, set()
    full = header + [c for c in old_header if c not in header]
    if full != old_header:
        changed = True
    i_id, i_path = old_header.index("image_id"), old_header.index("path")
    done: dict[str, str] = {}
    foreign: set[str] = set()
    kept: list[list[str]] = []
    seen_ids: set[str] = set()
    for r in rows:
        image_id, key = r[i_id], resolved_key(r[i_path]) if r[i_path] else ""
        if not image_id or image_id.casefold() in seen_ids:  # duplicate or malformed
            changed = True
            continue
        if key in keys:
            if overwrite or key in done or not outputs.complete(image_id):
                changed = True
                continue
            done[key] = image_id
        else:
            foreign.add(image_id)
        seen_ids.add(image_id.casefold())
        kept.append(r)
    if changed:
        remap = [old_header.index(c) if c in old_header else None for c in full]
        write_table(path, full, ([r[j] if j is not None else "" for j in remap] for r in kept))
    return full, done, foreign


def _read_notes(path: Path) -> dict[str, tuple[str, str]]:
    """``notes.csv`` of an earlier run: {image_id: (path, note)}."""
    if not path.is_file():
        return {}
    header, rows, _ = read_table(path)
    return {r[0]: (r[1], r[2]) for r in rows if header[:3] == ["image_id", "path", "note"]}


# -- one image's outputs -----------------------------------------------------------------------
def _read(path: Path, prepare: Callable | None = None, max_pixels: int = MAX_PIXELS):
    """Decode one file (at most ``max_pixels``); with ``prepare``, also bring it to the model's
    input (reader threads).

    Returns:
        (radiograph, prepared input or None).
    """
    from anatomix.io.read import read_radiograph

    radiograph = read_radiograph(path, max_pixels)
    if prepare is None:
        return radiograph, None
    try:
        return radiograph, prepare(radiograph)
    except Exception as e:  # noqa: BLE001 - reported as a segmentation failure
        return radiograph, e


def _reason(e: BaseException) -> str:
    if isinstance(e, ReadError):
        return e.cause
    if isinstance(e, MemoryError):
        return "out of memory"
    return f"{type(e).__name__}: {e}"


class _LockedSegmenter:
    """A segmenter whose ``predict`` holds a lock: QC's extra model calls from writer threads
    never run the model at the same time as the batch's own calls."""

    def __init__(self, segmenter, lock: threading.Lock):
        self._segmenter, self._lock = segmenter, lock

    def predict(self, radiographs, *args, **kwargs):
        with self._lock:
            return self._segmenter.predict(radiographs, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._segmenter, name)


class _ImageWriter:
    """Writes one image's files and builds its CSV row (runs in the writer pool)."""

    def __init__(self, header: Sequence[str], outputs: _Outputs, qc: QCHook | None, segmenter=None):
        self.header, self.outputs, self.qc = list(header), outputs, qc
        self.qc_failures = 0
        self.algorithm = ("anatomix", "")  # (name, version) named by DICOM-SEG outputs
        self.notes: dict[str, tuple[str, str]] = {}  # image_id -> (path, note) of this run
        self._lock = threading.Lock()
        takes = qc is not None and (getattr(qc[1], "takes_segmenter", False) or _accepts(qc[1], "segmenter"))
        self.qc_kwargs = {"segmenter": segmenter} if takes and segmenter is not None else {}

    def __call__(self, item: BatchItem, radiograph, seg) -> list[str]:
        from anatomix.anatomy import STRUCTURE_BY_KEY
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
            columns, assess = self.qc
            try:
                values = assess(seg, radiograph.pixels, node_std=seg.node_std, **self.qc_kwargs)
                cells.update({c: _qc_cell(values.get(c)) for c in columns})
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


# -- the batch ---------------------------------------------------------------------------------
class _Inline:
    """Executor stand-in that runs a call at submit time (``workers=0``)."""

    def submit(self, fn, *args) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:
            if not isinstance(e, Exception):
                raise
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _structures(segmenter) -> tuple[str, ...]:
    """Structure keys the segmenter produces: its ``structures`` or ``keys`` (pixel family), else
    its template's."""
    from anatomix.anatomy import LUNGS_HEART

    template = getattr(segmenter, "template", None) or LUNGS_HEART
    return tuple(getattr(segmenter, "structures", None) or getattr(segmenter, "keys", None) or template.keys)


def segment_batch(inputs: Iterable[PathLike], out_dir: PathLike, segmenter, *, batch_size: int = 8,
                  workers: int = 2, formats: Sequence[str] = ("png",), overlays: bool = False,
                  overwrite: bool = False, qc: bool | QCHook | None = True,
                  progress: bool | None = False,
                  on_image: Callable[[BatchItem], None] | None = None,
                  expanded: tuple[list[Path], list[InputError]] | None = None,
                  max_pixels: int = MAX_PIXELS) -> BatchSummary:
    """Segment every input radiograph and write masks, overlays and the CheXmask CSV.

    See the module docstring for the output layout and the resume rules.

    Args:
        inputs: files, directories, glob patterns, ``.txt``/``.csv`` lists (:func:`expand_inputs`).
        out_dir: the output folder (created if needed).
        segmenter: a :class:`~anatomix.graphs.inference.GraphSegmenter`, a ``PixelSegmenter`` or
            anything with ``predict(list[Radiograph]) -> list[Segmentation]`` that treats every
            image independently (see :func:`load_segmenter`).
        batch_size: images per ``predict`` call.
        workers: decoding threads ahead of the model and as many writing threads behind it;
            0 runs everything in the calling thread.
        formats: mask formats, any of ``"png"``, ``"nifti"`` and ``"dicom-seg"`` (needs
            highdicom: ``anatomix[dicom]``).
        overlays: also write ``overlays/<image_id>.png``.
        overwrite: redo images that an earlier run finished.
        qc: True: QC columns from :func:`default_qc` when available; False/None: none;
            or a ``(columns, assess)`` pair.
        progress: show a progress bar (tqdm, on stderr) with rate and ETA; None: when stderr is a
            terminal.
        on_image: called in the main thread after each image's row is written.
        expanded: ``expand_inputs(inputs)`` when the caller has it already (not expanded again).
        max_pixels: largest image read (rows x columns, checked before decoding); a larger file
            is one line of ``errors.csv``. Memory in flight is bounded by about
            ``2 * batch_size`` decoded images of at most this size.

    Returns:
        A :class:`BatchSummary`; ``exit_code`` is 1 when any input failed.

    Raises:
        AnatomixError: ``out_dir`` is not a usable folder or another run holds it.
        ValueError: a bad argument (batch size, workers, format).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"unknown mask format(s) {bad}; choose from {list(FORMATS)}")
    if DICOM_SEG in formats:
        from anatomix.io.dicom_seg import require_highdicom

        require_highdicom()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AnatomixError(f"{out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AnatomixError(f"{out}: cannot create output folder ({e.strerror or e})") from e
    t0 = time.perf_counter()
    with _lock(out):
        summary = _segment_locked(inputs, out, segmenter, batch_size, workers, formats, overlays,
                                  overwrite, qc, progress, on_image, expanded, max_pixels)
    summary.seconds = time.perf_counter() - t0
    return summary


def _segment_locked(inputs, out: Path, segmenter, batch_size: int, workers: int, formats, overlays: bool,
                    overwrite: bool, qc, progress, on_image, expanded, max_pixels: int) -> BatchSummary:
    from anatomix.io.chexmask import DEFAULT_STRUCTURES, chexmask_header

    qc_hook: QCHook | None = default_qc() if qc is True else (qc or None)
    structures = _structures(segmenter)
    qc_columns = tuple(qc_hook[0]) if qc_hook else ()
    header = chexmask_header((*DEFAULT_STRUCTURES, *structures), ["path", *qc_columns])
    paths, input_errors = expanded if expanded is not None else expand_inputs(inputs)
    inside = resolved_key(out) + os.sep  # never segment our own outputs (OUT inside an input folder)
    paths = [p for p in paths if not resolved_key(p).startswith(inside)]
    summary = BatchSummary(out_dir=out, total=len(paths) + len(input_errors), qc_columns=qc_columns)
    outputs = _Outputs(out, structures, formats, overlays)
    if DICOM_SEG in formats:
        outputs.notes = _read_notes(out / NOTES_NAME)
    _remove_stale_temporaries(out)
    identity = model_identity(segmenter)
    _claim_for_model(out, identity, overwrite)
    csv_path = out / CSV_NAME
    header, done, foreign = _prepare_csv(csv_path, header, paths, outputs, overwrite)

    ids = assign_image_ids(paths, taken=foreign)
    used = {i.casefold() for i in foreign} | {i.casefold() for i in done.values()}
    items: list[BatchItem] = []
    todo: list[BatchItem] = []
    for p, image_id in zip(paths, ids):
        key = resolved_key(p)
        if key in done:
            items.append(BatchItem(p, done[key]))
            continue
        if image_id.casefold() in used:  # the input set changed since the finished run
            stem, n = image_stem(p), 1
            while f"{stem}_{n}".casefold() in used:
                n += 1
            image_id = f"{stem}_{n}"
        used.add(image_id.casefold())
        item = BatchItem(p, image_id)
        items.append(item)
        todo.append(item)
    summary.skipped = len(items) - len(todo)

    errors: list[InputError] = list(input_errors)
    model_lock = threading.Lock()
    locked = _LockedSegmenter(segmenter, model_lock)
    writer = _ImageWriter(header, outputs, qc_hook, locked)
    if DICOM_SEG in formats:
        writer.algorithm = identity
    rows = _RowWriter(csv_path)
    bar = _progress_bar(len(todo), summary.skipped, progress)
    succeeded: set[str] = set()

    def written(item: BatchItem) -> None:
        succeeded.add(item.key)
        if on_image is not None:
            on_image(item)

    try:
        _pipeline(items, todo, locked, batch_size, workers, writer, rows, errors, summary, bar, written, max_pixels)
    finally:
        rows.close()
        if bar is not None:
            bar.close()
        summary.qc_failures = writer.qc_failures
        # errors.csv: this run's failures + earlier ones about inputs that did not succeed or
        # fail again now (still failing as far as anyone knows)
        settled = set(done) | succeeded | {e.path for e in errors} | {resolved_key(e.path) for e in errors}
        old = [e for e in read_errors(out / ERRORS_NAME) if e.path not in settled and resolved_key(e.path) not in settled]
        summary.errors = sorted(errors, key=lambda e: e.path)
        write_errors(out / ERRORS_NAME, sorted(summary.errors + old, key=lambda e: e.path))
        if DICOM_SEG in formats:  # notes of the images finished before, then of this run's
            notes = {i: n for i, n in outputs.notes.items() if i in set(done.values())}
            notes.update((i, n) for i, n in writer.notes.items() if resolved_key(n[0]) in succeeded)
            write_table(out / NOTES_NAME, ["image_id", "path", "note"],
                             ([i, *notes[i]] for i in sorted(notes)))
        fsync_dir(out)
    return summary


def _progress_bar(total: int, skipped: int, progress: bool | None):
    if progress is False:
        return None
    if progress is None and not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="img", desc="segment", file=sys.stderr, dynamic_ncols=True,
               smoothing=0.1)
    if skipped:
        bar.set_postfix_str(f"{skipped} already done", refresh=False)
    return bar


def _pipeline(items: list[BatchItem], todo: list[BatchItem], segmenter, batch_size: int, workers: int,
              writer: _ImageWriter, rows: _RowWriter, errors: list[InputError], summary: BatchSummary, bar,
              on_image, max_pixels: int) -> None:
    """Decode ahead (bounded), predict in batches, write behind (bounded), append rows in order.

    Batches are fixed chunks of ``batch_size`` consecutive images of the whole sorted input list
    (``items``), finished or not: a chunk with any image to do is decoded and predicted whole,
    and only its unfinished images are written. So every image meets the model in the same
    batch as in an uninterrupted run, and a resumed run gives bit-identical results even where
    a model's arithmetic depends slightly on the batch it is in (CPU kernels often do).
    """
    readers = ThreadPoolExecutor(workers, thread_name_prefix="anatomix-read") if workers else _Inline()
    writers = ThreadPoolExecutor(workers, thread_name_prefix="anatomix-write") if workers else _Inline()
    window = max(2 * batch_size, workers) if workers else 0
    wanted = set(map(id, todo))
    prepare = _prepare_method(segmenter) if workers else None  # only worth it with reader threads
    work = []  # (chunk start, item, to do?) for every chunk with something to do
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        if any(id(i) in wanted for i in chunk):
            work += [(start, i, id(i) in wanted) for i in chunk]
    reads: deque = deque()
    writes: deque = deque()
    pending = iter(work)
    timings = summary.timings

    def fill() -> None:
        while len(reads) < max(window, 1):
            entry = next(pending, None)
            if entry is None:
                return
            t = time.perf_counter()
            reads.append((*entry, readers.submit(_read, entry[1].path, prepare, max_pixels)))
            if not workers:  # decoded right here: count it as waiting for the reader
                timings["read_wait"] += time.perf_counter() - t
                return

    def fail(item: BatchItem, reason: str) -> None:
        errors.append(InputError(str(item.path), reason))
        if bar is not None:
            bar.update(1)

    def drain(keep: int) -> None:
        """Append the rows of finished writes in input order, leaving at most ``keep`` pending."""
        wrote = False
        while writes and (len(writes) > keep or (writes[0][1].done() and not writes[0][1].cancelled())):
            item, fut = writes.popleft()
            t = time.perf_counter()
            try:
                cells = fut.result()
            except Exception as e:  # noqa: BLE001
                timings["write_wait"] += time.perf_counter() - t
                fail(item, f"writing outputs failed: {_reason(e)}")
                continue
            timings["write_wait"] += time.perf_counter() - t
            rows.write(cells)
            wrote = True
            summary.segmented += 1
            if bar is not None:
                bar.update(1)
            if on_image is not None:
                on_image(item)
        if wrote:
            rows.sync()

    try:
        while True:
            fill()
            if not reads:
                break
            chunk = reads[0][0]
            batch = []
            while reads and reads[0][0] == chunk:
                _, item, to_do, fut = reads.popleft()
                t = time.perf_counter()
                try:
                    radiograph, prepared = fut.result()
                except Exception as e:  # noqa: BLE001 - every reader failure is this file's error
                    timings["read_wait"] += time.perf_counter() - t
                    if to_do:
                        fail(item, _reason(e))
                    fill()
                    continue
                timings["read_wait"] += time.perf_counter() - t
                batch.append((item, radiograph, to_do, prepared))
                fill()
            if not batch:
                continue
            t = time.perf_counter()
            results = _predict(segmenter, [b[1] for b in batch], [b[3] for b in batch] if prepare else None)
            timings["predict"] += time.perf_counter() - t
            for (item, radiograph, to_do, _), result in zip(batch, results):
                if not to_do:  # finished earlier: only here to keep the batch as it was
                    continue
                if isinstance(result, BaseException):
                    fail(item, f"segmentation failed: {_reason(result)}")
                else:
                    t = time.perf_counter()
                    writes.append((item, writers.submit(writer, item, radiograph, result)))
                    if not workers:  # written right here
                        timings["write_wait"] += time.perf_counter() - t
            del batch, results
            drain(keep=max(2 * batch_size, workers) if workers else 0)
        drain(keep=0)
    except BaseException:
        # interrupted (Ctrl-C, a bug): let running writes finish, keep the rows of the finished
        # prefix, so that a resume redoes as little as possible
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True, cancel_futures=True)
        finished = 0
        while finished < len(writes) and not writes[finished][1].cancelled():
            finished += 1
        drain(keep=len(writes) - finished)
        raise
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True, cancel_futures=True)


def _accepts(fn, name: str) -> bool:
    """Does callable ``fn`` take a parameter ``name``?"""
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _accepts_with_masks(segmenter) -> bool:
    """Does ``segmenter.predict`` take ``with_masks`` (then masks are rasterised by the writers)?"""
    return _accepts(getattr(segmenter, "_segmenter", segmenter).predict, "with_masks")


def _prepare_method(segmenter) -> Callable | None:
    """``segmenter.prepare`` when the segmenter splits its work (``predict(..., prepared=...)``)."""
    inner = getattr(segmenter, "_segmenter", segmenter)
    prepare = getattr(inner, "prepare", None)
    return prepare if callable(prepare) and _accepts(inner.predict, "prepared") else None


def _predict(segmenter, radiographs: list, prepared: list | None = None) -> list:
    """Segment a batch; when the batch fails, retry image by image so only the culprit fails.

    Segmenters whose ``predict`` takes ``with_masks`` (the graph family) are asked for landmarks
    only; the writer threads rasterise the masks, off the model's thread. Segmenters that offer
    ``prepare(radiograph)`` and ``predict(radiographs, prepared=[...])`` get their per-image
    preprocessing (resizing, normalisation) done by the reader threads (``prepared``), so that
    the model's thread only runs the model.
    """
    kwargs = {"with_masks": False} if _accepts_with_masks(segmenter) else {}
    if prepared is not None:
        failed = [p for p in prepared if isinstance(p, BaseException)]
        if failed:  # preprocessing failed for some: every image on its own
            return [p if isinstance(p, BaseException) else _predict(segmenter, [r], [p])[0]
                    for r, p in zip(radiographs, prepared)]
        kwargs["prepared"] = prepared
    try:
        out = segmenter.predict(radiographs, **kwargs)
        if len(out) != len(radiographs):
            raise AnatomixError(f"segmenter returned {len(out)} results for {len(radiographs)} images")
        return list(out)
    except Exception as batch_error:  # noqa: BLE001
        if len(radiographs) == 1:
            return [batch_error]
    results: list = []
    for i, r in enumerate(radiographs):
        if prepared is not None:
            kwargs["prepared"] = [prepared[i]]
        try:
            results.append(segmenter.predict([r], **kwargs)[0])
        except Exception as e:  # noqa: BLE001
            results.append(e)
    return results
