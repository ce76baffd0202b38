"""The training loop of every segmenter family (graph and pixel models), and its parts.

A family plugs in through :class:`Task`: how to build the model, the loss of a batch, and
the validation metrics. The loop gives them seeding, resumable checkpoints, the best
checkpoint by a validation score, a per-epoch CSV log and a progress display.

Files in ``out_dir``:
    ``last.pt``  everything needed to resume (model, optimiser, scheduler, epoch, RNG states);
    ``best.pt``  the model with the best validation score so far (what gets bundled);
    ``log.csv``  one row per epoch: epoch, lr, train loss parts, validation metrics, seconds.

Its optimiser (:func:`make_optimizer`), schedule (:func:`warmup_cosine`) and update with
gradient clipping (:func:`optimizer_step`) are also those of the anomaly models and critics
(:func:`anatomix.anomaly.train.fit_model`), with their own constants.

Both checkpoints hold plain types only (:func:`anatomix.models.save_checkpoint`) and load with
``torch.load(weights_only=True)``; a ``last.pt`` of an older version (numpy's RNG state as a
numpy array) still resumes through :func:`anatomix.models.load_checkpoint`.
"""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Protocol, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from anatomix.io.atomic import atomic_write
from anatomix.models import load_checkpoint, save_checkpoint
from anatomix.runtime import resolve_device


@dataclass
class TrainConfig:
    """Settings of the loop (the family's own settings live in its model config).

    Attributes:
        epochs: total number of epochs (a resumed run continues up to it).
        batch_size: training batch size.
        lr: peak learning rate of AdamW (cosine decay to 1% over the epochs, short warm-up).
        weight_decay: AdamW weight decay.
        seed: seeds python, numpy and torch (and the augmentation).
        val_every: validate every this many epochs (and at the last one).
        workers: DataLoader worker processes.
        threads: torch intra-op threads (0 = leave torch's default).
        init_from: a checkpoint whose weights start a new run (fine-tuning); ignored on resume.
        trust_init: read ``init_from`` with a full unpickle, which RUNS CODE FROM THE FILE
            (only for a file you trust; see :func:`anatomix.models.load_checkpoint`).
        device: where the model trains (``auto``: cuda when available, else cpu; ``cpu``,
            ``cuda``, ``cuda:1``...). Checkpoints load on any device (read to the CPU).
    """

    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    val_every: int = 5
    workers: int = 0
    threads: int = 0
    init_from: str = ""
    trust_init: bool = False
    device: str = "auto"


class Task(Protocol):
    """What a model family provides to :func:`fit`."""

    def build_model(self) -> torch.nn.Module: ...

    def loss(self, model: torch.nn.Module, batch: Dict[str, torch.Tensor],
             epoch: int) -> Tuple[torch.Tensor, Dict[str, float]]: ...

    def validate(self, model: torch.nn.Module, loader: DataLoader) -> Dict[str, float]:
        """Metrics on the validation set; must contain ``score`` (higher is better). The
        loader's batches are on the CPU; the model may be elsewhere (:func:`model_device`)."""
        ...

    def checkpoint_extra(self) -> Dict[str, Any]:
        """What inference needs besides the weights (model config, template, preprocessing)."""
        ...


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it (inside dicts, lists and tuples) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (where its inputs must go)."""
    return next(model.parameters()).device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def numpy_rng_state() -> Dict[str, Any]:
    """numpy's global RNG state in plain types: ``{"bit_generator": str, "key": (624,) uint32
    tensor, "pos": int, "has_gauss": int, "gauss": float}`` (loads with ``weights_only=True``)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {"bit_generator": str(name), "key": torch.from_numpy(key.copy()), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def set_numpy_rng_state(state: Dict[str, Any] | tuple) -> None:
    """Restore numpy's global RNG from :func:`numpy_rng_state`, or from the
    ``np.random.get_state()`` tuple that training states written before it hold."""
    if isinstance(state, dict):
        state = (state["bit_generator"], state["key"].numpy(), state["pos"], state["has_gauss"], state["gauss"])
    np.random.set_state(state)


def _one_thread(_worker: int) -> None:
    """Data workers use one torch thread each: oversubscribed threads slow everything 20x."""
    torch.set_num_threads(1)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """The optimiser of every anatomix training loop: AdamW over all of ``model``'s parameters."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                  floor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning-rate factor per optimiser step: linear warm-up to 1 over ``warmup_steps``, then
    cosine decay to ``floor`` at ``total_steps`` (stepped once per batch).

    .. math::
        f(s) = \\frac{s + 1}{W} \\; (s < W), \\qquad
        f(s) = \\phi + (1 - \\phi) \\, \\tfrac12 \\big(1 + \\cos(\\pi \\min(1, \\tfrac{s - W}{T - W}))\\big)

    The two branches below compute this same function in the floating-point order of the two loops
    they came from (segmenters: ``floor`` 0.01; anomaly models and critics: ``floor`` 0), so that
    every earlier run resumes and refits bit for bit: ``pi * (s - W) / (T - W)`` and
    ``pi * ((s - W) / (T - W))`` differ in the last bit for some steps.
    """
    span = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if floor:
            t = (step - warmup_steps) / span
            return floor + (1.0 - floor) * 0.5 * (1.0 + np.cos(np.pi * min(1.0, t)))
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / span))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, loss: torch.Tensor, max_norm: float = 5.0) -> None:
    """One update: clear gradients, back-propagate ``loss``, clip the gradient norm to
    ``max_norm``, step the optimiser, then the learning-rate schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    scheduler.step()


def _schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The segmenters' schedule: 2 % warm-up, cosine decay to 1 % of the peak."""
    return warmup_cosine(optimizer, total_steps, max(1, total_steps // 50), floor=0.01)


def fit(task: Task, train_set: Dataset, val_set: Dataset, config: TrainConfig,
        out_dir: Path | str, progress: bool = True) -> Path:
    """Train ``task``'s model, resuming from ``out_dir/last.pt`` when it exists.

    Returns:
        The path of the best checkpoint (``out_dir/best.pt``).
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model = task.build_model().to(device)
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
                              num_workers=config.workers, generator=gen,
                              persistent_workers=config.workers > 0, worker_init_fn=_one_thread)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, num_workers=0)
    scheduler = _schedule(optimizer, config.epochs * max(1, len(train_loader)))
    start, best = 0, -np.inf
    if (out / "last.pt").is_file():
        state = load_checkpoint(out / "last.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best = state["epoch"], state["best"]
        torch.set_rng_state(state["torch_rng"])
        set_numpy_rng_state(state["numpy_rng"])
        gen.set_state(state["loader_rng"])
    elif config.init_from:
        model.load_state_dict(load_checkpoint(config.init_from, trust=config.trust_init)["model"])
    bar = tqdm(range(start, config.epochs), initial=start, total=config.epochs, desc="train",
               unit="epoch", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        parts_sum: Dict[str, float] = {}
        for batch in train_loader:
            batch = to_device(batch, device)
            loss, parts = task.loss(model, batch, epoch)
            optimizer_step(model, optimizer, scheduler, loss)
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v / len(train_loader)
        row: Dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                               **{f"train_{k}": v for k, v in parts_sum.items()}}
        if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs:
            model.eval()
            with torch.no_grad():
                metrics = task.validate(model, val_loader)
            row.update({f"val_{k}": v for k, v in metrics.items()})
            if metrics["score"] > best:
                best = metrics["score"]
                save_checkpoint(out / "best.pt", {"model": model.state_dict(), "epoch": epoch + 1,
                                                  "metrics": metrics, "train_config": asdict(config),
                                                  **task.checkpoint_extra()})
        row["seconds"] = time.perf_counter() - t0
        _append_log(out / "log.csv", row)
        save_checkpoint(out / "last.pt", {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "best": best,
            "torch_rng": torch.get_rng_state(), "numpy_rng": numpy_rng_state(),
            "loader_rng": gen.get_state(), "train_config": asdict(config), **task.checkpoint_extra()})
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                         if k.startswith(("train_loss", "val_score"))})
    return out / "best.pt"


def _append_log(path: Path, row: Dict[str, Any]) -> None:
    """Append one epoch to the CSV log (the header grows when validation columns appear)."""
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    fields: list = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
