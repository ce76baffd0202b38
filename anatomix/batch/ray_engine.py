"""The distributed engine: the batch's fixed chunks as a Ray Data dataset, segmented by actors.

Each actor loads the model once (it arrives through Ray's object store) and runs
:func:`anatomix.batch.pipeline.process_chunk` (read, predict, write the image's files) on whole
chunks, so every image meets the model in the same batch as in a local run and the files are
byte-identical. Outputs go straight to the output folder, which every node must reach (a shared
filesystem). The driver receives each chunk's outcomes in input order and appends the CSV rows
itself: a killed driver leaves finished rows only, and a rerun resumes.

Needs ``pip install 'anatomix[ray]'``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace

import numpy as np

from anatomix.batch.engines import Job
from anatomix.batch.pipeline import Sink, fixed_chunks, process_chunk
from anatomix.errors import UsageError

INSTALL_HINT = "the Ray engine needs Ray: pip install 'anatomix[ray]'"


def require_ray() -> None:
    """Raise :class:`UsageError` (saying how to install it) when Ray Data is not importable."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


class ChunkWorker:
    """A Ray Data actor: one model and one image writer, many chunks.

    Args:
        job: the batch's :class:`~anatomix.batch.engines.Job` (model included).
        chunks: :func:`~anatomix.batch.pipeline.fixed_chunks` of the job.
        threads: torch threads of this worker.
    """

    def __init__(self, job: Job, chunks: list, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.job, self.chunks = job, chunks
        self.writer = job.writer(job.segmenter)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``batch["id"]``: chunk numbers -> ``outcomes``: per chunk, JSON of
        ``[cells, reason, note, qc_failed]`` per image to do."""
        out = []
        for n in batch["id"]:
            outcomes = process_chunk(self.chunks[int(n)], self.job.segmenter, self.writer, self.job.max_pixels)
            out.append(json.dumps([[o.cells, o.reason, o.note, o.qc_failed] for o in outcomes]))
        return {"id": batch["id"], "outcomes": np.array(out, dtype=object)}


@dataclass
class RayEngine:
    """Segment on a Ray cluster (or a local Ray instance).

    Attributes:
        address: None: join the running instance of this machine or start one; ``"auto"`` or
            ``"ray://host:port"``: a cluster.
        num_workers: actors, each with its own copy of the model.
        cpus_per_worker: CPUs each actor reserves (default: the cluster's CPUs but one, shared by
            the actors, at most 1 each: on a small machine, a whole CPU per actor leaves Ray
            Data's read tasks none, and the job waits for ever).
        gpus_per_worker: GPUs each actor reserves (0: CPU).
    """

    address: str | None = None
    num_workers: int = 2
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0
    name: str = "ray"

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise UsageError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise UsageError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise UsageError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")

    def run(self, job: Job, sink: Sink) -> None:
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        try:
            self._run(ray, job, sink)
        finally:
            if started:
                ray.shutdown()

    def _cpus(self, ray) -> float:
        if self.cpus_per_worker is not None:
            return self.cpus_per_worker
        # Ray Data's read tasks need a whole CPU beside the actors, or the job waits for ever
        total = float(ray.cluster_resources().get("CPU", 1.0))
        return max(0.01, min(1.0, (total - 1.0) / self.num_workers))

    def _run(self, ray, job: Job, sink: Sink) -> None:
        chunks = fixed_chunks(job.items, job.todo, job.batch_size)
        if not chunks:
            return
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # outcomes arrive in input order
        context.enable_progress_bars = False
        cpus = self._cpus(ray)
        ds = ray.data.range(len(chunks), override_num_blocks=len(chunks)).map_batches(
            ChunkWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=self.num_workers), num_cpus=cpus,
            num_gpus=self.gpus_per_worker or None,
            # the chunks carry the items: the job travels without its own copy of the input lists
            fn_constructor_kwargs={"job": replace(job, items=[], todo=[]), "chunks": chunks,
                                   "threads": max(1, int(cpus))})
        for row in ds.iter_rows():
            todo = [item for item, to_do in chunks[int(row["id"])] if to_do]
            for item, (cells, reason, note, qc_failed) in zip(todo, json.loads(row["outcomes"])):
                sink.qc_failures += bool(qc_failed)
                if note is not None:
                    sink.notes[item.image_id] = tuple(note)
                if cells is None:
                    sink.failed(item, reason)
                else:
                    sink.written(item, cells)
            sink.sync()

