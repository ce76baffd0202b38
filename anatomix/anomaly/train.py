"""Fit loop for the anomaly models and critics: deterministic, resumable, with a progress bar.

Optimiser, warm-up + cosine schedule and gradient clipping are :mod:`anatomix.training`'s
(``make_optimizer``, ``warmup_cosine``, ``optimizer_step``); this loop differs from
:func:`anatomix.training.fit` in what it iterates (in-memory images, a fresh seeded permutation
per epoch, the last partial batch kept), its constants (10 % warm-up, decay to 0) and its
one-file checkpoint checked against the fit settings.

A checkpoint (model, optimiser, scheduler, epoch, config; plain types, loadable with
``weights_only=True``) is written atomically after every epoch; calling :func:`fit_model` again with the same checkpoint path and the same settings
continues where it stopped (a checkpoint from other settings is refused, never mixed in).

With ``select`` (a judge of the model on held-out normals, e.g.
:class:`anatomix.anomaly.selection.NormalSelection`) every epoch is scored and the best epoch's
weights are kept in the checkpoint and restored at the end (model selection / early stopping
from normals only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from anatomix.errors import CheckpointError, UsageError


def _set_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)


def fit_model(model, images: np.ndarray, epochs: int = 50, batch_size: int = 32, lr: float = 1e-3,
              weight_decay: float = 1e-5, seed: int = 0, checkpoint: Path | None = None,
              progress: bool = True, log: Callable[[str], None] | None = None,
              device: str = "cpu", select: Callable | None = None,
              snapshots: Path | None = None) -> list[dict[str, float]]:
    """Train ``model`` on normal images.

    Args:
        model: an :class:`~anatomix.anomaly.models.base.AnomalyModel`.
        images: ``(N, S, S)`` float32 in [0, 1] (model frame).
        epochs: passes over ``images``; cosine learning-rate decay over all of them.
        checkpoint: path of the resumable checkpoint (None = no checkpoint).
        progress: show a tqdm bar over epochs.
        log: called with one line per epoch.
        select: called with the model after every epoch; returns metrics with ``score`` (higher
            is better). The weights of the best-scoring epoch (the first of equals) are restored
            at the end; its metrics join the history as ``select_<name>``.
        snapshots: folder where every epoch's weights are also written (``epoch_001.pt``, ...;
            :func:`anatomix.models.save_checkpoint` of the state dict), for studies of the schedule.

    Returns:
        One dict per epoch (``epoch``, ``loss``, model logs, ``select_*``, ``seconds``); with
        ``select`` the chosen epoch's record has ``selected: 1.0``.
    """
    import torch

    from anatomix.models import load_checkpoint, save_checkpoint
    from anatomix.training import make_optimizer, optimizer_step, warmup_cosine

    device = torch.device(device)
    model.to(device)
    x_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    n = x_all.shape[0]
    if n == 0:
        raise UsageError("no training images")
    steps_per_epoch = math.ceil(n / batch_size)
    total = max(1, epochs * steps_per_epoch)
    opt = make_optimizer(model, lr, weight_decay)
    sched = warmup_cosine(opt, total, min(100, total // 10), floor=0.0)  # 10 % warm-up (at most 100 steps), to 0
    settings = {"method": model.method, "config": model.config, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "seed": seed, "n": n}
    if select is not None:
        settings["select"] = getattr(select, "name", type(select).__name__)
    history: list[dict[str, float]] = []
    best: dict | None = None  # {"epoch", "score", "model"} of the best epoch so far
    start = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint)
        if state.get("settings") != settings:
            raise CheckpointError(checkpoint, "checkpoint was written with other settings; "
                                              "delete it or pass another path")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, history, best = state["epoch"], state["history"], state.get("best")
        if log:
            log(f"resuming from epoch {start} ({checkpoint})")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start, desc=f"fit {model.method}", unit="epoch", leave=False)
    for epoch in range(start, epochs):
        t0 = time.time()
        model.train()
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        _set_seed(seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g)
        sums: dict[str, float] = {}
        for i in range(0, n, batch_size):
            x = x_all[perm[i:i + batch_size]].to(device)
            loss, logs = model.training_loss(x)
            optimizer_step(model, opt, sched, loss, max_norm=5.0)
            for k, v in {"loss": float(loss.detach()), **logs}.items():
                sums[k] = sums.get(k, 0.0) + v * x.shape[0]
        rec = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()}}
        if select is not None:
            rec.update({f"select_{k}": float(v) for k, v in select(model).items()})
            if best is None or rec["select_score"] > best["score"]:
                best = {"epoch": epoch + 1, "score": rec["select_score"],
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        rec["seconds"] = time.time() - t0
        history.append(rec)
        if snapshots is not None:
            save_checkpoint(Path(snapshots) / f"epoch_{epoch + 1:03d}.pt", model.state_dict())
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"settings": settings, "model": model.state_dict(), "opt": opt.state_dict(),
                                         "sched": sched.state_dict(), "epoch": epoch + 1, "history": history,
                                         "best": best})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.4g}")
        if log:
            sel = f" select {rec['select_score']:.4f}" if select is not None else ""
            log(f"epoch {epoch + 1}/{epochs} loss {rec['loss']:.5g}{sel} ({rec['seconds']:.1f}s)")
    if bar is not None:
        bar.close()
    if best is not None:
        model.load_state_dict(best["model"])
        history = [{**h, "selected": float(h["epoch"] == best["epoch"])} for h in history]
        if log:
            log(f"selected epoch {best['epoch']} (score {best['score']:.4f})")
    model.eval()
    return history


def fit_critic(model, images: np.ndarray, epochs: int = 30, batch_size: int = 32, lr: float = 2e-4,
               seed: int = 0, checkpoint: Path | None = None, progress: bool = True,
               log: Callable[[str], None] | None = None, device: str = "cpu", channels=(32, 64, 128),
               members: int = 3):
    """Train a :class:`~anatomix.anomaly.critic.PatchCritic` on normals vs ``model``'s
    reconstructions of them (the same resumable loop as :func:`fit_model`).

    Args:
        model: a fitted reconstruction model (frozen here).
        images: ``(N, S, S)`` the NORMAL images ``model`` was fitted on.

    Returns:
        The critic, in eval mode, on the CPU.
    """
    import torch

    from anatomix.anomaly.critic import CriticFit, PatchCritic

    torch.manual_seed(seed + 1)
    critic = PatchCritic(channels, members)
    fit_model(CriticFit(critic, model), images, epochs=epochs, batch_size=batch_size, lr=lr,
              weight_decay=0.0, seed=seed, checkpoint=checkpoint, progress=progress, log=log, device=device)
    model.cpu()
    return critic.cpu().eval()


def add_critic(det, images: np.ndarray, epochs: int = 30, batch_size: int = 32, checkpoint: Path | None = None,
               progress: bool = True, log: Callable[[str], None] | None = None, device: str = "cpu") -> None:
    """Give a detector its realness critic (:func:`fit_critic`, seeded with ``det.meta["seed"]``).

    Args:
        det: a :class:`~anatomix.anomaly.detector.Detector` (its model fitted).
        images: ``(N, S, S)`` the NORMAL images its model was fitted on (not the calibration ones).

    Records ``critic_epochs`` and adds the critic's time to ``fit_seconds`` in ``det.meta``.
    Calibrate afterwards if the scoring uses the critic.
    """
    t0 = time.time()
    det.critic = fit_critic(det.model, images, epochs=epochs, batch_size=batch_size,
                            seed=int(det.meta.get("seed", 0)), checkpoint=checkpoint, progress=progress,
                            log=log, device=device)
    det.meta["critic_epochs"] = int(epochs)
    det.meta["fit_seconds"] = float(det.meta.get("fit_seconds", 0.0)) + time.time() - t0


def split_calibration(n: int, calib_fraction: float = 0.1, seed: int = 0, min_calib: int = 5):
    """Indices (fit, calibration) of a random hold-out of ``calib_fraction`` (at least ``min_calib``)."""
    if n < min_calib + 1:
        raise UsageError(f"need at least {min_calib + 1} normal images (fit + calibration), got {n}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    k = min(n - 1, max(min_calib, round(n * calib_fraction)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def split_fit(n: int, calib_fraction: float = 0.1, select_fraction: float = 0.05, seed: int = 0,
              min_select: int = 8):
    """Indices (train, selection, calibration) of ``n`` normals.

    The calibration hold-out is :func:`split_calibration`'s (the same images every method
    calibrates on); ``select_fraction`` of the rest (at least ``min_select``; a random draw
    seeded with ``seed + 1``) is held out for model selection, the remainder trains.
    """
    fit_idx, cal_idx = split_calibration(n, calib_fraction, seed)
    if len(fit_idx) < min_select + 1:
        raise UsageError(f"need at least {min_select + 1} normal images left after calibration for selection "
                         f"and training, got {len(fit_idx)}")
    rng = np.random.default_rng(seed + 1)
    perm = rng.permutation(len(fit_idx))
    k = min(len(fit_idx) - 1, max(min_select, round(len(fit_idx) * select_fraction)))
    return np.sort(fit_idx[perm[k:]]), np.sort(fit_idx[perm[:k]]), cal_idx


def fit_detector(images: np.ndarray, method: str = "ae", image_size: int | None = None,
                 epochs: int = 50, batch_size: int = 32, lr: float = 1e-3, calib_fraction: float = 0.1,
                 calib_masks=None, scoring=None, seed: int = 0, checkpoint: Path | None = None,
                 progress: bool = True, log: Callable[[str], None] | None = None,
                 model_config: dict | None = None, device: str = "cpu", meta: dict | None = None,
                 prior_masks: dict | None = None, critic_epochs: int = 0, select: bool = False,
                 select_fraction: float = 0.05, snapshots: Path | None = None):
    """Fit a detector on NORMAL model-frame images: train on one part, calibrate on the rest.

    Args:
        images: ``(N, S, S)`` normal images in the model frame of ``image_size``.
        method: ``ae`` | ``memae`` | ``mae`` | ``squid`` | ``simsid`` | ``rd``.
        calib_fraction: share held out (at random, ``seed``) for normalisation and thresholds.
        calib_masks: optional per-image model-frame structure masks (same order as
            ``images``) so that masked regions get calibrated too.
        scoring: :class:`~anatomix.anomaly.detector.ScoringConfig` (default settings if None).
        model_config: extra model constructor arguments.
        prior_masks: a fixed model-frame field (see :class:`~anatomix.anomaly.detector.Detector`)
            used for images without masks, at calibration and scoring.
        critic_epochs: also fit a realness critic (:func:`fit_critic`) for this many epochs
            after the model (0 = none; needed by the ``critic`` residuals). Its checkpoint sits
            beside ``checkpoint`` as ``<name>.critic.ckpt``.
        select: hold out ``select_fraction`` of the fit normals (:func:`split_fit`) and keep the
            epoch that best separates them from synthetic opacities made from them
            (:class:`~anatomix.anomaly.selection.NormalSelection`); normals only.
        snapshots: keep every epoch's weights there (:func:`fit_model`).

    A model with a ``prepare_fit`` step (``rd``: its teacher, read from a file or pretrained
    on the training normals, checkpoint ``<name>.teacher.ckpt``) takes it before training.

    Returns:
        A calibrated :class:`~anatomix.anomaly.detector.Detector`; ``meta`` records the split,
        epochs and fit time.
    """
    import torch

    from anatomix.anomaly.detector import Detector, ScoringConfig
    from anatomix.anomaly.models import DEFAULT_IMAGE_SIZE, create_model, model_class

    images = np.asarray(images, dtype=np.float32)
    image_size = int(image_size or images.shape[-1] or DEFAULT_IMAGE_SIZE[method])
    if images.ndim != 3 or images.shape[1:] != (image_size, image_size):
        raise UsageError(f"images must be (N, {image_size}, {image_size}), got {images.shape}")
    scoring = scoring or ScoringConfig()
    if not model_class(method).reconstructs and scoring.residual != "auto":
        raise UsageError(f"{method} gives no image reconstruction: its residual is 'auto', not {scoring.residual!r}")
    if "critic" in scoring.residual and not critic_epochs:
        raise UsageError(f"residual {scoring.residual!r} needs a critic: give critic_epochs > 0")
    if select:
        fit_idx, sel_idx, cal_idx = split_fit(len(images), calib_fraction, select_fraction, seed)
    else:
        (fit_idx, cal_idx), sel_idx = split_calibration(len(images), calib_fraction, seed), []
    torch.manual_seed(seed)
    model = create_model(method, image_size=image_size, **(model_config or {}))
    t0 = time.time()
    facts: dict = {}
    if hasattr(model, "prepare_fit"):
        teacher_ck = None if checkpoint is None else Path(checkpoint).with_suffix(".teacher.ckpt")
        facts = model.prepare_fit(images[fit_idx], checkpoint=teacher_ck, progress=progress, log=log, device=device)
    judge = None
    if select:
        from anatomix.anomaly.selection import NormalSelection

        judge = NormalSelection(images[sel_idx], seed=seed)
    history = fit_model(model, images[fit_idx], epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                        checkpoint=checkpoint, progress=progress, log=log, device=device, select=judge,
                        snapshots=snapshots)
    fit_s = sum(h["seconds"] for h in history) if history else time.time() - t0
    fit_s += float(facts.get("teacher_fit_seconds", 0.0))
    det = Detector(model.cpu(), scoring, prior_masks=prior_masks)
    det.meta.update({"n_fit": len(fit_idx), "n_calibration": len(cal_idx),
                     "calibration_indices": [int(i) for i in cal_idx], "epochs": int(epochs),
                     "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed), "critic_epochs": 0,
                     "fit_seconds": float(fit_s), "final_loss": float(history[-1]["loss"]) if history else None,
                     **facts, **(meta or {})})
    if select:
        det.meta.update({"n_select": len(sel_idx), "selection": judge.name,
                         "selected_epoch": next(int(h["epoch"]) for h in history if h["selected"]),
                         "selection_history": [{k: v for k, v in h.items() if k.startswith("select_") or k == "epoch"}
                                               for h in history]})
    if critic_epochs:
        critic_ck = None if checkpoint is None else Path(checkpoint).with_suffix(".critic.ckpt")
        add_critic(det, images[fit_idx], critic_epochs, batch_size=batch_size, checkpoint=critic_ck,
                   progress=progress, log=log, device=device)
    cm = None if calib_masks is None else [calib_masks[i] for i in cal_idx]
    det.calibrate(images[cal_idx], cm)
    return det
