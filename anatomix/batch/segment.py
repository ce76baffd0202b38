"""Batch segmentation: a folder of radiographs in, masks, landmarks and a CheXmask CSV out.

The package: :mod:`~anatomix.batch.outdir` (the output folder: layout, lock, resume, model
claim), :mod:`~anatomix.batch.pipeline` (threads: decode ahead, predict, write behind),
:mod:`~anatomix.batch.writer` (one image's files, row and QC cells), this module (the run).

:func:`segment_batch` is what ``anatomix segment`` runs. Its contract:

- **Inputs** (:func:`anatomix.io.inputs.expand_inputs`): files, directories (walked recursively), glob patterns and
  ``.txt`` / ``.csv`` lists of paths. A bad entry (missing path, dangling link, unmatched glob, a
  directory named like an image) never stops the batch: it becomes a row of ``errors.csv``.
- **Outputs** in ``out_dir``:

  - ``segmentations.csv`` in the CheXmask layout: ``image_id``, ``path``, ``Height``, ``Width``,
    ``Landmarks`` (JSON [x, y] in original pixels), ``Right Lung``, ``Left Lung``, ``Heart`` (RLE
    at original resolution, row-major, 1-based starts; more mask columns when the model has more
    structures), then the QC columns (:class:`~anatomix.batch.writer.QCHook`, by default :mod:`anatomix.qc`);
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

import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from anatomix.anatomy import STRUCTURE_KEYS
from anatomix.batch.engines import Engine, Job, LocalEngine
from anatomix.batch.outdir import (
    CSV_NAME,
    DICOM_SEG,
    FORMATS,
    NOTES_NAME,
    Outputs,
    RowWriter,
    claim_for_model,
    folder_lock,
    prepare_csv,
    read_notes,
    remove_stale_temporaries,
)
from anatomix.batch.pipeline import Sink
from anatomix.batch.records import BatchItem, BatchSummary
from anatomix.batch.writer import QCHook, default_qc
from anatomix.errors import AnatomixError, UsageError
from anatomix.io.atomic import fsync_dir
from anatomix.io.inputs import (
    ERRORS_NAME,
    InputError,
    PathLike,
    assign_image_ids,
    expand_inputs,
    image_stem,
    read_errors,
    resolved_key,
    write_errors,
)
from anatomix.io.tables import write_table
from anatomix.limits import MAX_PIXELS
from anatomix.models import model_identity
from anatomix.segmentation import Segmenter


def segment_batch(inputs: Iterable[PathLike], out_dir: PathLike, segmenter: Segmenter, *, batch_size: int = 8,
                  workers: int = 2, formats: Sequence[str] = ("png",), overlays: bool = False,
                  overwrite: bool = False, qc: bool | QCHook | None = True,
                  progress: bool | None = False,
                  on_image: Callable[[BatchItem], None] | None = None,
                  expanded: tuple[list[Path], list[InputError]] | None = None,
                  max_pixels: int = MAX_PIXELS, engine: Engine | None = None) -> BatchSummary:
    """Segment every input radiograph and write masks, overlays and the CheXmask CSV.

    See the module docstring for the output layout and the resume rules.

    Args:
        inputs: files, directories, glob patterns, ``.txt``/``.csv`` lists (:func:`expand_inputs`).
        out_dir: the output folder (created if needed).
        segmenter: a :class:`~anatomix.segmentation.Segmenter` (see
            :func:`anatomix.models.load_segmenter`) that treats every image independently.
        batch_size: images per ``predict`` call.
        workers: decoding threads ahead of the model and as many writing threads behind it;
            0 runs everything in the calling thread (the local engine's).
        formats: mask formats, any of ``"png"``, ``"nifti"`` and ``"dicom-seg"`` (needs
            highdicom: ``anatomix[dicom]``).
        overlays: also write ``overlays/<image_id>.png``.
        overwrite: redo images that an earlier run finished.
        qc: True: the QC columns of :func:`~anatomix.batch.writer.default_qc`; False/None:
            none; or a :class:`~anatomix.batch.writer.QCHook`.
        progress: show a progress bar (tqdm, on stderr) with rate and ETA; None: when stderr is a
            terminal.
        on_image: called in the main thread after each image's row is written.
        expanded: ``expand_inputs(inputs)`` when the caller has it already (not expanded again).
        max_pixels: largest image read (rows x columns, checked before decoding); a larger file
            is one line of ``errors.csv``. Memory in flight is bounded by about
            ``2 * batch_size`` decoded images of at most this size.
        engine: where the pipeline runs: None: :class:`~anatomix.batch.engines.LocalEngine`
            with ``workers`` threads; or a :class:`~anatomix.batch.ray_engine.RayEngine`
            (same outputs, byte for byte).

    Returns:
        A :class:`BatchSummary`; ``exit_code`` is 1 when any input failed.

    Raises:
        AnatomixError: ``out_dir`` is not a usable folder or another run holds it.
        UsageError: a bad argument (batch size, workers, format).
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    engine = engine if engine is not None else LocalEngine(workers)
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"unknown mask format(s) {bad}; choose from {list(FORMATS)}")
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
    with folder_lock(out):
        summary = _segment_locked(inputs, out, segmenter, batch_size, engine, formats, overlays,
                                  overwrite, qc, progress, on_image, expanded, max_pixels)
    summary.seconds = time.perf_counter() - t0
    return summary


def _segment_locked(inputs, out: Path, segmenter, batch_size: int, engine: Engine, formats, overlays: bool,
                    overwrite: bool, qc, progress, on_image, expanded, max_pixels: int) -> BatchSummary:
    from anatomix.io.chexmask import chexmask_header

    qc_hook: QCHook | None = default_qc() if qc is True else (qc or None)
    if qc_hook is not None and not isinstance(qc_hook, QCHook):
        raise UsageError(f"qc must be True, False, None or a QCHook, got {type(qc_hook).__name__}")
    structures = tuple(segmenter.structures)
    qc_columns = qc_hook.columns if qc_hook else ()
    header = chexmask_header((*STRUCTURE_KEYS, *structures), ["path", *qc_columns])
    paths, input_errors = expanded if expanded is not None else expand_inputs(inputs)
    inside = resolved_key(out) + os.sep  # never segment our own outputs (OUT inside an input folder)
    paths = [p for p in paths if not resolved_key(p).startswith(inside)]
    summary = BatchSummary(out_dir=out, total=len(paths) + len(input_errors), qc_columns=qc_columns)
    outputs = Outputs(out, structures, formats, overlays)
    if DICOM_SEG in formats:
        outputs.notes = read_notes(out / NOTES_NAME)
    remove_stale_temporaries(out)
    identity = model_identity(segmenter)
    claim_for_model(out, identity, overwrite)
    csv_path = out / CSV_NAME
    header, done, foreign = prepare_csv(csv_path, header, paths, outputs, overwrite)

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
    job = Job(items, todo, segmenter, batch_size, header, outputs, qc_hook,
              identity if DICOM_SEG in formats else ("anatomix", ""), max_pixels, summary.timings)
    rows = RowWriter(csv_path)
    bar = _progress_bar(len(todo), summary.skipped, progress)
    succeeded: set[str] = set()

    def written(item: BatchItem) -> None:
        succeeded.add(item.key)
        if on_image is not None:
            on_image(item)

    sink = Sink(rows, errors, summary, bar, written)
    try:
        engine.run(job, sink)
    finally:
        rows.close()
        if bar is not None:
            bar.close()
        summary.qc_failures = sink.qc_failures
        # errors.csv: this run's failures + earlier ones about inputs that did not succeed or
        # fail again now (still failing as far as anyone knows)
        settled = set(done) | succeeded | {e.path for e in errors} | {resolved_key(e.path) for e in errors}
        old = [e for e in read_errors(out / ERRORS_NAME) if e.path not in settled and resolved_key(e.path) not in settled]
        summary.errors = sorted(errors, key=lambda e: e.path)
        write_errors(out / ERRORS_NAME, sorted(summary.errors + old, key=lambda e: e.path))
        if DICOM_SEG in formats:  # notes of the images finished before, then of this run's
            notes = {i: n for i, n in outputs.notes.items() if i in set(done.values())}
            notes.update((i, n) for i, n in sink.notes.items() if resolved_key(n[0]) in succeeded)
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
