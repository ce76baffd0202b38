"""The per-image pipeline of a batch: decode ahead, predict in fixed batches, write behind.

:func:`run_pipeline` is what every engine runs. Reader threads decode files (and run the
segmenter's ``prepare``), the calling thread runs the model on fixed chunks of the sorted input
list, writer threads write each image's files; rows are appended in input order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from anatomix.batch.outdir import RowWriter
from anatomix.batch.records import BatchItem, BatchSummary
from anatomix.batch.writer import ImageWriter
from anatomix.errors import AnatomixError, ReadError
from anatomix.io.inputs import InputError
from anatomix.limits import MAX_PIXELS


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


class LockedSegmenter:
    """A segmenter whose ``predict`` holds a lock: QC's extra model calls from writer threads
    never run the model at the same time as the batch's own calls."""

    def __init__(self, segmenter, lock: threading.Lock):
        self._segmenter, self._lock = segmenter, lock

    def predict(self, radiographs, *args, **kwargs):
        with self._lock:
            return self._segmenter.predict(radiographs, *args, **kwargs)

    def __getattr__(self, name: str):  # everything else of the Segmenter protocol, unlocked
        return getattr(self._segmenter, name)


class Sink:
    """Where an engine reports each image's outcome, in input order (the driver's side).

    Appends the row of a written image to ``segmentations.csv`` (:class:`RowWriter`), lists a
    failed one in ``errors``, counts, updates the progress bar and calls ``on_image``.
    """

    def __init__(self, rows: RowWriter, errors: list[InputError], summary: BatchSummary, bar=None,
                 on_image: Callable[[BatchItem], None] | None = None):
        self.rows, self.errors, self.summary, self.bar, self.on_image = rows, errors, summary, bar, on_image
        self.notes: dict[str, tuple[str, str]] = {}  # image_id -> (path, note): no DICOM-SEG for it
        self.qc_failures = 0

    def written(self, item: BatchItem, cells: list[str]) -> None:
        self.rows.write(cells)
        self.summary.segmented += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.on_image is not None:
            self.on_image(item)

    def sync(self) -> None:
        """Flush and fsync the rows written so far (they are the images' completion markers)."""
        self.rows.sync()

    def failed(self, item: BatchItem, reason: str) -> None:
        self.errors.append(InputError(str(item.path), reason))
        if self.bar is not None:
            self.bar.update(1)

    def report(self, outcomes: list[Outcome]) -> None:
        """Record a chunk's :class:`Outcome` list (from :func:`process_chunk`) and sync the rows."""
        for outcome in outcomes:
            self.qc_failures += outcome.qc_failed
            if outcome.note is not None:
                self.notes[outcome.item.image_id] = outcome.note
            if outcome.cells is None:
                self.failed(outcome.item, outcome.reason)
            else:
                self.written(outcome.item, outcome.cells)
        self.sync()


def fixed_chunks(items: list[BatchItem], todo: list[BatchItem], batch_size: int) -> list[list[tuple[BatchItem, bool]]]:
    """The model's batches: fixed chunks of ``batch_size`` consecutive images of the whole sorted
    input list, finished or not, each image with "to do?"; only chunks with something to do.

    Every engine predicts these same chunks, so every image meets the model in the same batch as
    in an uninterrupted local run (CPU kernels round differently with batch composition).
    """
    wanted = set(map(id, todo))
    chunks = []
    for start in range(0, len(items), batch_size):
        chunk = [(i, id(i) in wanted) for i in items[start:start + batch_size]]
        if any(to_do for _, to_do in chunk):
            chunks.append(chunk)
    return chunks


@dataclass
class Outcome:
    """What became of one image of a chunk: its row cells, or the reason it failed.

    Attributes:
        item: the image.
        cells: its ``segmentations.csv`` row (None when it failed).
        reason: its ``errors.csv`` reason (None when it was written).
        note: ``(path, note)`` when the image got no DICOM-SEG (not a DICOM source).
        qc_failed: QC raised on it (its QC cells are empty).
    """

    item: BatchItem
    cells: list[str] | None = None
    reason: str | None = None
    note: tuple[str, str] | None = None
    qc_failed: bool = False


def process_chunk(chunk: list[tuple[BatchItem, bool]], segmenter, writer: ImageWriter,
                  max_pixels: int = MAX_PIXELS, timings: dict[str, float] | None = None) -> list[Outcome]:
    """One chunk in the calling thread: read every image, predict them as one batch, write the
    ones to do. The same steps (:func:`_read`, :func:`_predict`, the writer) and reasons as
    :func:`run_pipeline`, without its threads: what a distributed worker and a thread-less local
    run execute.

    Args:
        timings: when given, seconds reading (``read_wait``), in predict and writing
            (``write_wait``) are added to it.

    Returns:
        One :class:`Outcome` per image to do, in chunk order.
    """
    clock = {"read_wait": 0.0, "predict": 0.0, "write_wait": 0.0}
    outcomes: dict[int, Outcome] = {}
    batch = []
    t = time.perf_counter()
    for item, to_do in chunk:
        try:
            radiograph, _ = _read(item.path, None, max_pixels)
        except Exception as e:  # noqa: BLE001 - every reader failure is this file's error
            if to_do:
                outcomes[id(item)] = Outcome(item, reason=_reason(e))
            continue
        batch.append((item, radiograph, to_do))
    clock["read_wait"] += time.perf_counter() - t
    t = time.perf_counter()
    results = _predict(segmenter, [b[1] for b in batch]) if batch else []
    clock["predict"] += time.perf_counter() - t
    t = time.perf_counter()
    for (item, radiograph, to_do), result in zip(batch, results):
        if not to_do:
            continue
        if isinstance(result, BaseException):
            outcomes[id(item)] = Outcome(item, reason=f"segmentation failed: {_reason(result)}")
            continue
        failures = writer.qc_failures
        try:
            cells = writer(item, radiograph, result)
        except Exception as e:  # noqa: BLE001
            outcomes[id(item)] = Outcome(item, reason=f"writing outputs failed: {_reason(e)}")
            continue
        outcomes[id(item)] = Outcome(item, cells, note=writer.notes.get(item.image_id),
                                     qc_failed=writer.qc_failures > failures)
    clock["write_wait"] += time.perf_counter() - t
    if timings is not None:
        for k, v in clock.items():
            timings[k] += v
    return [outcomes[id(item)] for item, to_do in chunk if to_do]


def run_pipeline(items: list[BatchItem], todo: list[BatchItem], segmenter, batch_size: int, workers: int,
                 writer: ImageWriter, sink: Sink, timings: dict[str, float], max_pixels: int) -> None:
    """Decode ahead (bounded), predict in batches, write behind (bounded), append rows in order;
    ``workers`` (>= 1) threads on each side (no threads: :func:`process_chunk`, chunk by chunk).

    Batches are fixed chunks of ``batch_size`` consecutive images of the whole sorted input list
    (``items``), finished or not: a chunk with any image to do is decoded and predicted whole,
    and only its unfinished images are written. So every image meets the model in the same
    batch as in an uninterrupted run, and a resumed run gives bit-identical results even where
    a model's arithmetic depends slightly on the batch it is in (CPU kernels often do).
    """
    readers = ThreadPoolExecutor(workers, thread_name_prefix="anatomix-read")
    writers = ThreadPoolExecutor(workers, thread_name_prefix="anatomix-write")
    window = max(2 * batch_size, workers)
    prepare = segmenter.prepare
    # (chunk number, item, to do?) of every fixed chunk with something to do
    work = [(n, item, to_do) for n, chunk in enumerate(fixed_chunks(items, todo, batch_size))
            for item, to_do in chunk]
    reads: deque = deque()
    writes: deque = deque()
    pending = iter(work)

    def fill() -> None:
        while len(reads) < window:
            entry = next(pending, None)
            if entry is None:
                return
            reads.append((*entry, readers.submit(_read, entry[1].path, prepare, max_pixels)))

    fail = sink.failed

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
            sink.written(item, cells)
            wrote = True
        if wrote:
            sink.sync()

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
            results = _predict(segmenter, [b[1] for b in batch], [b[3] for b in batch])
            timings["predict"] += time.perf_counter() - t
            for (item, radiograph, to_do, _), result in zip(batch, results):
                if not to_do:  # finished earlier: only here to keep the batch as it was
                    continue
                if isinstance(result, BaseException):
                    fail(item, f"segmentation failed: {_reason(result)}")
                else:
                    writes.append((item, writers.submit(writer, item, radiograph, result)))
            del batch, results
            drain(keep=window)
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


def _predict(segmenter, radiographs: list, prepared: list | None = None) -> list:
    """Segment a batch; when the batch fails, retry image by image so only the culprit fails.

    Segmenters are asked for landmarks without masks (``with_masks=False``): the writer threads
    rasterise contour masks, off the model's thread (families whose masks are their primary
    output return them anyway). With ``prepared`` (the segmenter's ``prepare`` of each image, run
    by the reader threads) the model's thread only runs the model.
    """
    kwargs: dict = {"with_masks": False}
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
