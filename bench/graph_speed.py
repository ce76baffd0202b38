"""CPU speed of the default HybridGNet: training and inference throughput, size, peak memory.

Usage::

    .venv/bin/python bench/graph_speed.py                 # image sizes 256 and 512, 2 threads
    .venv/bin/python bench/graph_speed.py --sizes 256 --threads 1 --repeats 9
    .venv/bin/python bench/graph_speed.py --sizes 256 --threads 1 --sparse-baseline

``--sparse-baseline`` adds, per size, a row with the graph convolutions run by torch_geometric's
sparse propagation (:func:`anatomix.graphs.model.sparse_propagation`, as before they were dense
products) and the dense / sparse ratios, measured in the same process.

Throughputs are medians over ``--repeats`` timed repeats after one warm-up, per wall-clock second
and per CPU second of this process (steadier on a busy machine). Training is one Adam
step on a batch of random images (forward in train mode, :func:`hybrid_loss`, backward, step);
inference is an eval-mode forward under ``torch.inference_mode``. Peak RSS is the process's
high-water mark so far (``resource.getrusage``), so it grows along the table. The machine's load
average is printed too: on a shared machine, other jobs slow every figure down, and with more
than one thread OpenMP's spin-waiting makes it much worse; run with ``OMP_WAIT_POLICY=PASSIVE``
(or ``--threads 1``) there.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from anatomix.graphs.loss import hybrid_loss
from anatomix.graphs.model import GraphConfig, HybridGNet, sparse_propagation


def median_rate(fn: Callable[[], None], items: int, repeats: int) -> tuple[float, float]:
    """Items per wall-clock second and per CPU second of ``fn`` (medians of ``repeats`` calls
    after one warm-up call). On a busy machine the CPU-time rate is the steadier figure."""
    fn()
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return items / statistics.median(wall), items / statistics.median(cpu)


def checkpoint_mib(model: HybridGNet) -> float:
    buf = io.BytesIO()
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict()}, buf)
    return len(buf.getvalue()) / 2 ** 20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def train_rate(model: HybridGNet, size: int, batch: int, repeats: int) -> tuple[float, float]:
    x = torch.rand(batch, 1, size, size)
    target = torch.rand(batch, model.n_nodes, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        loss, _ = hybrid_loss(model(x), target, kl_weight=1e-5)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return median_rate(step, batch, repeats)


def infer_rate(model: HybridGNet, size: int, batch: int, repeats: int) -> tuple[float, float]:
    x = torch.rand(batch, 1, size, size)
    model.eval()

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    return median_rate(forward, batch, repeats)


def bench(size: int, template: str, train_batch: int, repeats: int) -> dict[str, Any]:
    """One row of the table: a fresh default model at ``size``."""
    torch.manual_seed(0)
    model = HybridGNet(GraphConfig(template=template, image_size=size))
    return {
        "size": size,
        "params": sum(p.numel() for p in model.parameters()),
        "ckpt_mib": checkpoint_mib(model),
        "train": train_rate(model, size, train_batch, repeats),
        "infer1": infer_rate(model, size, 1, repeats),
        "infer8": infer_rate(model, size, 8, repeats),
        "rss": peak_rss_mib(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--template", default="lungs_heart")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sparse-baseline", action="store_true", help="also time sparse graph propagation")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, template {args.template}, "
          f"train batch {args.train_batch}, median of {args.repeats}, "
          f"load average before {os.getloadavg()[0]:.2f}, RSS after imports {peak_rss_mib():.0f} MiB")
    print("img/s per wall-clock second (and per CPU second in brackets)")
    head = f"{'size':>5} {'graph conv':>10} {'params':>10} {'ckpt MiB':>9} {'train':>15} {'infer batch 1':>15} " \
           f"{'infer batch 8':>15} {'peak RSS MiB':>13}"
    print(head)
    print("-" * len(head))
    rates = ("train", "infer1", "infer8")
    for size in args.sizes:
        rows = {}
        if args.sparse_baseline:
            with sparse_propagation():
                rows["sparse"] = bench(size, args.template, args.train_batch, args.repeats)
        rows["dense"] = bench(size, args.template, args.train_batch, args.repeats)
        for kind, r in rows.items():
            cells = " ".join(f"{f'{r[k][0]:.1f} ({r[k][1]:.1f})':>15}" for k in rates)
            print(f"{r['size']:>5} {kind:>10} {r['params']:>10,} {r['ckpt_mib']:>9.2f} {cells} {r['rss']:>13.0f}",
                  flush=True)
        if args.sparse_baseline:
            ratios = " ".join(f"{rows['dense'][k][0] / rows['sparse'][k][0]:>14.2f}x" for k in rates)
            print(f"{size:>5} {'ratio':>10} {'':>10} {'':>9} {ratios}", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
