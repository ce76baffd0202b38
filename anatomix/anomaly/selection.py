"""Model selection from NORMAL images only: synthetic opacities made from held-out normals.

SQUID and SimSID keep the checkpoint with the best AUROC on a validation split that contains
pneumonia films; a normal-only screen cannot. Here the held-out normals are the only input:
each is copied a few times with simulated opacities (:func:`synthetic_anomalies`: soft, textured
bright patches of random size and strength in the central field, like consolidations and
nodules), and a model is judged by how well its image scores separate the copies from the
clean normals (AUROC), the normals' own training loss as the tie-breaker (:class:`NormalSelection`).
No abnormal image and no label is read anywhere on this path.

Shapes: images ``(N, S, S)`` float32 in [0, 1], model frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anatomix.anomaly.scoring import smooth


def synthetic_anomalies(images: np.ndarray, copies: int = 3, seed: int = 0) -> np.ndarray:
    """Copies of normal images with one to three simulated opacities each.

    Each opacity: a centre uniform in the central field (x in [0.15, 0.85], y in [0.2, 0.85] of
    the side), a radius of 3-12 % of the side, a soft edge (Gaussian profile), a strength of
    0.08-0.3 that blends towards white (``x + a (1 - x) g``), and smooth texture (the profile is
    modulated by smoothed noise, so it is not a clean disc).

    Args:
        images: ``(N, S, S)`` normal images.
        copies: abnormal copies per image.
        seed: the draw (fixed per fit, so every epoch is judged on the same set).

    Returns:
        ``(N * copies, S, S)`` float32 in [0, 1], image ``i``'s copies at ``i * copies + j``.
    """
    rng = np.random.default_rng(seed)
    n, s, _ = images.shape
    yy, xx = np.mgrid[0:s, 0:s] / s
    out = np.repeat(np.asarray(images, dtype=np.float32), copies, axis=0)
    for k in range(len(out)):
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.uniform(0.15, 0.85), rng.uniform(0.2, 0.85)
            r, a = rng.uniform(0.03, 0.12), rng.uniform(0.08, 0.3)
            g = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r ** 2)))
            tex = smooth(rng.normal(1.0, 0.5, (1, s, s)).astype(np.float32), max(1.0, r * s / 4))[0]
            out[k] = out[k] + a * (1 - out[k]) * np.clip(g * tex, 0, 1)
    return np.clip(out, 0, 1).astype(np.float32)


def image_scores(model, images: np.ndarray, topk: float = 5.0, batch_size: int = 64) -> np.ndarray:
    """Mean of the top ``topk`` % of each image's native anomaly map, ``(N,)`` (no calibration)."""
    import torch

    out = []
    dev = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            m = model.anomaly_map(torch.from_numpy(images[i:i + batch_size])[:, None].to(dev)).flatten(1)
            k = max(1, round(m.shape[1] * topk / 100))
            out.append(m.topk(k, dim=1).values.mean(1).cpu().numpy())
    return np.concatenate(out)


class NormalSelection:
    """The per-epoch judge of :func:`anatomix.anomaly.train.fit_model` (its ``select``).

    Args:
        normals: ``(N, S, S)`` held-out NORMAL images (never trained on).
        copies: synthetic abnormal copies per normal.
        seed: the synthetic draw.

    Calling it with a model returns ``{"score", "synthetic_auroc", "heldout_loss"}``: ``score``
    (higher is better) is the AUROC of clean vs synthetic copies minus a tie-breaker of
    ``1e-3 x`` the held-out loss (the loss only decides between epochs of equal AUROC).
    """

    name = "synthetic-opacities"

    def __init__(self, normals: np.ndarray, copies: int = 3, seed: int = 0) -> None:
        self.normals = np.ascontiguousarray(normals, dtype=np.float32)
        self.abnormal = synthetic_anomalies(self.normals, copies, seed)

    def heldout_loss(self, model, batch_size: int = 64) -> float:
        """The model's training loss on the held-out normals (eval mode, RNG state left as it was)."""
        import torch

        model.eval()
        total = 0.0
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(0)
            for i in range(0, len(self.normals), batch_size):
                x = torch.from_numpy(self.normals[i:i + batch_size])[:, None].to(next(model.parameters()).device)
                total += float(model.training_loss(x)[0]) * len(x)
        return total / len(self.normals)

    def __call__(self, model) -> dict[str, float]:
        from anatomix.anomaly.metrics import auroc

        s0, s1 = image_scores(model, self.normals), image_scores(model, self.abnormal)
        auc = auroc(np.r_[np.zeros(len(s0)), np.ones(len(s1))], np.r_[s0, s1])
        loss = self.heldout_loss(model)
        return {"score": float(auc - 1e-3 * loss), "synthetic_auroc": float(auc), "heldout_loss": loss}


def select_residual(detector, normals: np.ndarray, residuals: Sequence[str], copies: int = 3,
                    seed: int = 0) -> tuple[str, dict[str, float]]:
    """Choose a detector's residual from held-out NORMAL images only, and set it.

    Each candidate residual (``ScoringConfig.residual``: ``auto``, ``ssim``, ``critic``,
    ``ssim+critic``, ...) scores the normals and their synthetic-opacity copies with the detector's
    own aggregation over the whole image; the one with the highest AUROC (the earlier candidate on
    a tie) is kept in ``detector.scoring.residual``. The statistics of a ``+critic`` sum are
    recomputed from the same normals for each candidate.

    Args:
        detector: an :class:`anatomix.anomaly.detector.Detector` (changed in place).
        normals: ``(N, S, S)`` model-frame held-out normals of the detector's side.
        residuals: the candidates, in order of preference.

    Returns:
        The chosen residual and every candidate's synthetic-opacity AUROC.
    """
    from anatomix.anomaly.metrics import auroc

    normals = np.ascontiguousarray(normals, dtype=np.float32)
    painted = synthetic_anomalies(normals, copies, seed)
    y = np.r_[np.zeros(len(normals)), np.ones(len(painted))]
    aurocs, stats = {}, {}
    for residual in residuals:
        detector.scoring.residual = residual
        detector.set_component_stats(normals)
        stats[residual] = detector.component_stats
        maps = detector.model_maps(np.concatenate([normals, painted]))
        aurocs[residual] = float(auroc(y, [detector.raw_scores(m, None)["image"] for m in maps]))
    best = max(residuals, key=lambda r: aurocs[r])
    detector.scoring.residual, detector.component_stats = best, stats[best]
    return best, aurocs
