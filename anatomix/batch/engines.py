"""Where the per-image work runs: here (:class:`LocalEngine`, the default), or on a Ray cluster
(:class:`RayEngine`, extra ``anatomix[ray]``).

Engines do two things:

- :meth:`Engine.run` segments a :class:`Job` (the fixed chunks of the sorted input list, the
  model, what to write) and reports every image's outcome, in input order, to the driver's
  :class:`~anatomix.batch.pipeline.Sink`, which appends the CSV rows and lists the errors
  (``anatomix segment``);
- :meth:`Engine.map_chunks` maps a :class:`ChunkTask` over chunks and yields the results in
  chunk order (``anatomix qc``, ``anatomix anomaly score``: the driver writes the tables).

Engines change where reading, predicting and writing run, never what they do: every engine calls
the same per-chunk function, and the same inputs give byte-identical outputs on every engine.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from anatomix.batch.outdir import Outputs
from anatomix.batch.pipeline import (
    LockedSegmenter,
    Sink,
    fixed_chunks,
    process_chunk,
    run_pipeline,
)
from anatomix.batch.records import BatchItem
from anatomix.batch.writer import ImageWriter, QCHook
from anatomix.errors import UsageError
from anatomix.limits import MAX_PIXELS


@dataclass
class Job:
    """One batch's work, as the driver prepared it.

    Attributes:
        items: every input image, sorted (finished ones included: they fix the chunks).
        todo: the images to segment now.
        segmenter: the model (:class:`~anatomix.segmentation.Segmenter`).
        batch_size: images per model call.
        header: the CSV header (structure and QC columns).
        outputs: the output folder's file names.
        qc: the QC hook, or None.
        algorithm: (name, version) that DICOM-SEG outputs name.
        max_pixels: the readers' size limit.
        timings: seconds spent waiting for reads, in predict and waiting for writes (local engine).
    """

    items: list[BatchItem]
    todo: list[BatchItem]
    segmenter: Any
    batch_size: int
    header: list[str]
    outputs: Outputs
    qc: QCHook | None
    algorithm: tuple[str, str] = ("anatomix", "")
    max_pixels: int = MAX_PIXELS
    timings: dict[str, float] = field(default_factory=lambda: {"read_wait": 0.0, "predict": 0.0, "write_wait": 0.0})

    def writer(self, segmenter) -> ImageWriter:
        """An :class:`ImageWriter` of this job (each engine worker makes its own)."""
        writer = ImageWriter(self.header, self.outputs, self.qc, segmenter)
        writer.algorithm = self.algorithm
        return writer


def chunked(iterable: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items of ``iterable`` (the last one shorter), lazily."""
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def progress_bar(results: Iterable, desc: str, total: int | None, progress: bool | None,
                 unit: str = "img") -> Iterable:
    """``results`` with a tqdm bar on stderr (images/s, ETA when ``total`` is known) while they
    are consumed; ``progress`` None: only when stderr is a terminal, False: none."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return results
    from tqdm import tqdm

    return tqdm(results, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


class ChunkTask(Protocol):
    """Work that an engine maps over chunks (it travels to the workers, so it must pickle).

    :meth:`open` runs once per worker, where it loads what the work needs (a model, reference
    sets), and returns the function of one chunk; a chunk and its result must pickle too.
    """

    def open(self) -> Callable[[Any], Any]: ...


@dataclass
class SegmentTask:
    """Segmentation of a :class:`Job`'s fixed chunks (what :class:`RayEngine` workers run).

    A chunk is a list of ``(BatchItem, to do?)`` (:func:`~anatomix.batch.pipeline.fixed_chunks`);
    its result, one :class:`~anatomix.batch.pipeline.Outcome` per image to do.
    """

    job: Job

    def open(self) -> Callable[[list], list]:
        writer = self.job.writer(self.job.segmenter)
        return lambda chunk: process_chunk(chunk, self.job.segmenter, writer, self.job.max_pixels, self.job.timings)


class Engine(Protocol):
    """Runs a :class:`Job`, reporting each image to ``sink`` in input order; maps a
    :class:`ChunkTask` over chunks, yielding the results in chunk order."""

    name: str

    def run(self, job: Job, sink: Sink) -> None: ...

    def map_chunks(self, task: ChunkTask, chunks: Iterable) -> Iterator: ...


@dataclass
class LocalEngine:
    """This process: decoding threads ahead of the model, writing threads behind it.

    Attributes:
        workers: threads on each side (0: everything in the calling thread, chunk by chunk, as
            a distributed worker does).
    """

    workers: int = 2
    name: str = "local"

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise UsageError(f"workers must be >= 0, got {self.workers}")

    def run(self, job: Job, sink: Sink) -> None:
        if not self.workers:  # the distributed workers' function, chunk by chunk
            process = SegmentTask(job).open()
            for chunk in fixed_chunks(job.items, job.todo, job.batch_size):
                sink.report(process(chunk))
            return
        # QC's extra model calls (writer threads) never run the model beside the batch's own
        locked = LockedSegmenter(job.segmenter, threading.Lock())
        writer = job.writer(locked)
        try:
            run_pipeline(job.items, job.todo, locked, job.batch_size, self.workers, writer, sink, job.timings,
                         job.max_pixels)
        finally:
            sink.notes.update(writer.notes)
            sink.qc_failures += writer.qc_failures

    def map_chunks(self, task: ChunkTask, chunks: Iterable) -> Iterator:
        """The chunks one after another in this thread (``workers`` plays no part)."""
        process = task.open()
        for chunk in chunks:
            yield process(chunk)


def engine_from_name(name: str, workers: int = 2, **ray_options: Any) -> Engine:
    """``"local"`` -> :class:`LocalEngine` (``workers`` threads); ``"ray"`` ->
    :class:`~anatomix.batch.ray_engine.RayEngine` (``ray_options``: address, num_workers,
    cpus_per_worker, gpus_per_worker).

    Raises:
        UsageError: unknown engine, or Ray is not installed (the message says how to install it).
    """
    if name == "local":
        return LocalEngine(workers)
    if name == "ray":
        from anatomix.batch.ray_engine import RayEngine, require_ray

        require_ray()
        return RayEngine(**ray_options)
    raise UsageError(f"unknown engine {name!r}; choose from: local, ray")
