"""The distributed engine: chunks of the work as Ray Data datasets, processed by actors.

Each actor opens the task once (its model arrives through Ray's object store and is loaded once
per actor) and runs the same per-chunk function as the local engine: for ``segment``,
:func:`anatomix.batch.pipeline.process_chunk` (read, predict, write the image's files) on the
batch's fixed chunks, so every image meets the model in the same batch as in a local run and the
files are byte-identical. Outputs go straight to the output folder, which every node must reach
(a shared filesystem). The driver receives each chunk's result in input order and writes the
tables itself: a killed driver leaves finished rows only, and a rerun resumes. A worker that dies
is restarted by Ray and its chunk is run again (files are written atomically, so a chunk run
twice writes the same bytes).

Needs ``pip install 'anatomix[ray]'``.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from anatomix.batch.engines import ChunkTask, Job, SegmentTask
from anatomix.batch.pipeline import Sink, fixed_chunks
from anatomix.errors import UsageError

INSTALL_HINT = "the Ray engine needs Ray: pip install 'anatomix[ray]'"


def require_ray() -> None:
    """Raise :class:`UsageError` (saying how to install it) when Ray Data is not importable."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


class TaskWorker:
    """A Ray Data actor: opens a :class:`~anatomix.batch.engines.ChunkTask` once (its model is
    loaded once per worker), then runs it on many chunks.

    Args:
        task: the task (it arrives through Ray's object store).
        threads: torch threads of this worker.
    """

    def __init__(self, task: ChunkTask, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.process = task.open()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``batch["chunk"]``: pickled chunks -> ``result``: their pickled results."""
        out = [pickle.dumps(self.process(pickle.loads(c))) for c in batch["chunk"]]
        return {"result": np.array(out, dtype=object)}


@dataclass
class RayEngine:
    """Work on a Ray cluster (or a local Ray instance).

    Attributes:
        address: None: join the running instance of this machine or start one; ``"auto"`` or
            ``"ray://host:port"``: a cluster.
        num_workers: actors, each with its own copy of the model.
        cpus_per_worker: CPUs each actor reserves (default: the cluster's CPUs but one, shared by
            the actors, at most 1 each: on a small machine, a whole CPU per actor leaves Ray
            Data's read tasks none, and the job waits for ever).
        gpus_per_worker: GPUs each actor reserves (0: CPU).
        window: chunks per Ray Data dataset. The driver holds one window's chunks at a time and
            the actors are started once per window (a few seconds): long inputs stream through
            in windows, in order.
    """

    address: str | None = None
    num_workers: int = 2
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0
    window: int = 1024
    name: str = "ray"

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise UsageError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise UsageError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise UsageError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.window < 1:
            raise UsageError(f"window must be >= 1, got {self.window}")

    def run(self, job: Job, sink: Sink) -> None:
        """Segment ``job``'s fixed chunks on the actors; the driver appends each chunk's rows."""
        chunks = fixed_chunks(job.items, job.todo, job.batch_size)
        # the chunks carry the items: the job travels without its own copy of the input lists
        task = SegmentTask(replace(job, items=[], todo=[]))
        for outcomes in self.map_chunks(task, chunks):
            sink.report(outcomes)

    def map_chunks(self, task: ChunkTask, chunks: Iterable) -> Iterator:
        """Run ``task`` on the actors, one chunk per call; yield the results in chunk order."""
        import ray

        chunks = iter(chunks)
        window = list(itertools.islice(chunks, self.window))
        if not window:
            return
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        try:
            os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")  # Ray Data re-reads it; INFO: lines per dataset
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True  # results arrive in chunk order
            context.enable_progress_bars = False
            cpus = self._cpus(ray)
            while window:
                ds = ray.data.from_items([{"chunk": pickle.dumps(c)} for c in window],
                                         override_num_blocks=len(window))
                ds = ds.map_batches(
                    TaskWorker, batch_size=1, num_cpus=cpus, num_gpus=self.gpus_per_worker or None,
                    compute=ray.data.ActorPoolStrategy(size=min(self.num_workers, len(window))),
                    fn_constructor_kwargs={"task": task, "threads": max(1, int(cpus))})
                for row in ds.iter_rows():
                    yield pickle.loads(row["result"])
                window = list(itertools.islice(chunks, self.window))
        finally:
            if started:
                ray.shutdown()

    def _cpus(self, ray) -> float:
        if self.cpus_per_worker is not None:
            return self.cpus_per_worker
        # Ray Data's read tasks need a whole CPU beside the actors, or the job waits for ever
        total = float(ray.cluster_resources().get("CPU", 1.0))
        return max(0.01, min(1.0, (total - 1.0) / self.num_workers))
