"""Detection metrics: AUROC, average precision, TPR at a fixed FPR, ROC curve and plot.

Plain numpy (ties handled exactly); AUROC agrees with MONAI's ``compute_roc_auc``.
Labels: 1 = abnormal (positive), 0 = normal. Scores: higher = more anomalous.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anatomix.errors import UsageError


def _check(y, s) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise UsageError(f"{y.size} labels but {s.size} scores")
    if not (set(np.unique(y)) <= {0, 1}):
        raise UsageError("labels must be 0 (normal) or 1 (abnormal)")
    if y.min(initial=1) == y.max(initial=0):
        raise UsageError("need both normal and abnormal cases")
    return y, s


def roc_curve(y, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), from (0, 0) up to (1, 1); ties grouped."""
    y, s = _check(y, s)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[distinct]
    fp = (distinct + 1) - tp
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (y.size - y.sum())]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def auroc(y, s) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count 1/2)."""
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))


def average_precision(y, s) -> float:
    """AP = sum over thresholds of (R_n - R_{n-1}) * P_n (the step-wise definition)."""
    y, s = _check(y, s)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[distinct]
    prec = tp / (distinct + 1)
    rec = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, rec]) * prec))


def tpr_at_fpr(y, s, fpr: float) -> float:
    """Highest TPR reachable with FPR <= ``fpr`` (a threshold between distinct scores)."""
    f, t, _ = roc_curve(y, s)
    return float(t[f <= fpr + 1e-12].max())


def summary(y, s) -> dict[str, float]:
    """AUROC, AP, TPR at 5 % and 10 % FPR, counts."""
    y, s = _check(y, s)
    return {"auroc": auroc(y, s), "ap": average_precision(y, s),
            "tpr@5%fpr": tpr_at_fpr(y, s, 0.05), "tpr@10%fpr": tpr_at_fpr(y, s, 0.10),
            "n_normal": int((y == 0).sum()), "n_abnormal": int((y == 1).sum())}


def plot_roc(curves: dict[str, tuple[Sequence[int], Sequence[float]]], path, title: str = "ROC") -> Path:
    """Write a ROC plot PNG: ``curves`` maps a legend name to ``(labels, scores)``.

    Uses matplotlib when installed, else draws with Pillow.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - Pillow fallback
        return _plot_roc_pil(curves, path)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for name, (y, s) in curves.items():
        f, t, _ = roc_curve(y, s)
        ax.plot(f, t, label=f"{name} (AUROC {auroc(y, s):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.axvline(0.05, color="grey", lw=0.6, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def _plot_roc_pil(curves, path: Path) -> Path:  # pragma: no cover - only without matplotlib
    from PIL import Image, ImageDraw

    n, m = 400, 40
    im = Image.new("RGB", (n + 2 * m, n + 2 * m), "white")
    d = ImageDraw.Draw(im)
    d.rectangle([m, m, m + n, m + n], outline="black")
    d.line([m, m + n, m + n, m], fill="grey")
    colours = ["red", "blue", "green", "orange", "purple", "brown"]
    for i, (name, (y, s)) in enumerate(curves.items()):
        f, t, _ = roc_curve(y, s)
        pts = [(m + fx * n, m + n - tx * n) for fx, tx in zip(f, t)]
        c = colours[i % len(colours)]
        d.line(pts, fill=c, width=2)
        d.text((m + n * 0.45, m + n - 15 * (i + 1)), f"{name} AUROC {auroc(y, s):.3f}", fill=c)
    im.save(path)
    return path
