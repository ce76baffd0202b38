"""A predicted Dice per mask from cheap QC signals, and its leave-one-collection-out validation.

A :class:`DiceModel` is ridge regression on standardised features (a closed form, numpy only),
clipped to [0, 1]. What DEFINES it (feature names, scaling, coefficients) is fitted once on
masks of known quality; the pass threshold on its output CALIBRATES it and is chosen apart
(:func:`choose_threshold`).

Leave one collection out (:func:`loco_splits`, :func:`loco_evaluate`): for each collection, the
model and the threshold are fitted on the masks of the OTHER collections only and measured on
the held-out one, which is how the estimate behaves on a hospital it was not built on.

Shapes: ``features`` (n_masks, n_features) float; ``dice`` (n_masks,) true Dice; ``groups``
(n_masks,) collection names.

:func:`mean_dice` and :func:`estimate_agreement` measure any Dice estimate (RCA, this model)
against the true Dice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from anatomix.anatomy import STRUCTURE_KEYS
from anatomix.errors import UsageError

FAILED_BELOW = 0.8
"""A mask with true Dice below this is a failure that QC must flag."""

GOOD_FROM = 0.93
"""A mask with true Dice at or above this is good and QC must pass it."""


@dataclass
class DiceModel:
    """Ridge regression of true Dice on standardised features, output clipped to [0, 1].

    Attributes:
        names: feature names (column order of ``features``).
        mean, scale: per-feature standardisation fitted on the training masks.
        coef: (n_features,) weights on standardised features; ``intercept`` the bias.
        alpha: the ridge penalty (on the standardised weights, not on the intercept).
        threshold: the pass threshold on a mask set's predicted Dice (chosen apart, by
            :func:`choose_threshold`; NaN until set).
        meta: provenance (what it was fitted on, by which command).
    """

    names: List[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float = 1.0
    threshold: float = float("nan")
    meta: Dict[str, object] = field(default_factory=dict)

    @classmethod
    def fit(cls, features: np.ndarray, dice: np.ndarray, names: Optional[Sequence[str]] = None,
            alpha: float = 1.0) -> "DiceModel":
        """Fit on (n, f) ``features`` and (n,) true ``dice``. Non-finite features are replaced by
        the training mean (so a missing figure contributes nothing).

        Raises:
            anatomix.errors.UsageError: the shapes do not match or there is no mask.
        """
        x = np.asarray(features, np.float64)
        y = np.asarray(dice, np.float64)
        if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
            raise UsageError(f"need (n, f) features and (n,) dice, got {x.shape} and {y.shape}")
        mean = np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        x = np.where(np.isfinite(x), x, mean)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        z = (x - mean) / scale
        y0 = y.mean()
        coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y0))
        names = list(names) if names is not None else [f"f{i}" for i in range(x.shape[1])]
        return cls(names, mean, scale, coef, float(y0), float(alpha))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(n, f) features -> (n,) predicted Dice in [0, 1]."""
        x = np.asarray(features, np.float64)
        x = np.where(np.isfinite(x), x, self.mean)
        return np.clip((x - self.mean) / self.scale @ self.coef + self.intercept, 0.0, 1.0)

    def save(self, path) -> None:
        """Write as JSON (plain numbers: loads without unpickling)."""
        import json
        from pathlib import Path

        Path(path).write_text(json.dumps({
            "names": self.names, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
            "coef": self.coef.tolist(), "intercept": self.intercept, "alpha": self.alpha,
            "threshold": self.threshold, "meta": self.meta}, indent=1) + "\n")

    @classmethod
    def load(cls, path) -> "DiceModel":
        """Read a file written by :meth:`save`."""
        import json
        from pathlib import Path

        d = json.loads(Path(path).read_text())
        return cls(list(d["names"]), np.array(d["mean"], float), np.array(d["scale"], float),
                   np.array(d["coef"], float), float(d["intercept"]), float(d["alpha"]),
                   float(d["threshold"]), dict(d.get("meta", {})))


DICE_MODEL_FILE = "qc_dice_model.json"
"""The bundled predicted-Dice model in ``anatomix/weights`` (built by ``tools/build_qc_dice_model.py``)."""

_BUNDLED: Dict[str, DiceModel] = {}


def bundled_dice_model() -> Optional[DiceModel]:
    """The bundled :class:`DiceModel` (loaded once), or None when the file is absent."""
    from anatomix.models import WEIGHTS_DIR

    p = WEIGHTS_DIR / DICE_MODEL_FILE
    if "model" not in _BUNDLED and p.is_file():
        _BUNDLED["model"] = DiceModel.load(p)
    return _BUNDLED.get("model")


def mask_means(values: np.ndarray, mask_ids: Sequence) -> Tuple[np.ndarray, np.ndarray]:
    """Mean of per-structure ``values`` (n,) over each mask set: (unique mask ids in first-seen
    order, (n_sets,) means)."""
    ids = np.asarray(mask_ids).astype(str)
    uniq, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    sums = np.bincount(inv, weights=np.asarray(values, float))
    means = sums / np.bincount(inv)
    order = np.argsort(first)
    return uniq[order], means[order]


def pass_rates(pred: np.ndarray, dice: np.ndarray, threshold: float,
               hard_fail: Optional[np.ndarray] = None) -> Tuple[float, float]:
    """(fraction of failed masks flagged, fraction of good masks passed); NaN when there are none.

    A mask passes when ``pred >= threshold`` and it has no hard failure.
    """
    pred, dice = np.asarray(pred, float), np.asarray(dice, float)
    passed = pred >= threshold
    if hard_fail is not None:
        passed &= ~np.asarray(hard_fail, bool)
    failed, good = dice < FAILED_BELOW, dice >= GOOD_FROM
    flag = float((~passed[failed]).mean()) if failed.any() else float("nan")
    keep = float(passed[good].mean()) if good.any() else float("nan")
    return flag, keep


def choose_threshold(pred: np.ndarray, dice: np.ndarray, hard_fail: Optional[np.ndarray] = None) -> float:
    """The predicted-Dice threshold that maximises min(% failed flagged, % good passed) on these
    masks (ties: the middle of the best run of candidates). Candidates are the midpoints between
    sorted predictions. With no failed or no good masks, the other rate alone decides."""
    p = np.unique(np.asarray(pred, float))
    cands = np.concatenate([[p[0] - 1e-6], (p[:-1] + p[1:]) / 2, [p[-1] + 1e-6]]) if p.size else np.array([0.5])
    scores = []
    for t in cands:
        flag, keep = pass_rates(pred, dice, t, hard_fail)
        scores.append(np.nanmin([flag, keep]) if np.isfinite([flag, keep]).any() else 0.0)
    scores = np.asarray(scores)
    best = np.flatnonzero(scores == scores.max())
    run = best[: np.argmax(np.diff(np.append(best, best[-1] + 2)) > 1) + 1]  # first contiguous run
    return float(cands[run[len(run) // 2]])


def loco_splits(groups: Sequence[str]) -> Iterator[Tuple[str, np.ndarray, np.ndarray]]:
    """Leave one collection out: ``(held_out, train_index, test_index)`` per collection (sorted),
    with every mask of ``held_out`` in the test part and none in the training part."""
    g = np.asarray(groups).astype(str)
    for held in sorted(set(g.tolist())):
        yield held, np.flatnonzero(g != held), np.flatnonzero(g == held)


@dataclass
class LocoResult:
    """One held-out collection: what was fitted on the others and how it did on it."""

    held_out: str
    n: int
    n_failed: int
    n_good: int
    pearson_r: float
    flagged_failed: float
    passed_good: float
    threshold: float
    model: DiceModel = field(repr=False)
    pred: np.ndarray = field(repr=False)


def loco_evaluate(features: np.ndarray, dice: np.ndarray, groups: Sequence[str],
                  names: Optional[Sequence[str]] = None, hard_fail: Optional[np.ndarray] = None,
                  alpha: float = 1.0, fit: Callable[..., DiceModel] = DiceModel.fit,
                  mask_ids: Optional[Sequence] = None) -> List[LocoResult]:
    """Leave-one-collection-out validation of a :class:`DiceModel` and its threshold.

    For each collection, ``fit`` and :func:`choose_threshold` see only the other collections'
    rows; the held-out rows are only predicted and scored.

    Args:
        features: (n, f); dice: (n,) true Dice; groups: (n,) collection of each row.
        names: feature names; hard_fail: (n,) bool, rows whose mask set fails a hard plausibility
            check whatever its predicted Dice; alpha: ridge penalty.
        fit: the fitting function, ``fit(features, dice, names, alpha)`` (for tests and variants).
        mask_ids: (n,) the mask set of each row when rows are structures: the model is fitted
            on rows, while the threshold, the rates and r are taken over mask sets (mean true
            and predicted Dice of a set's rows). None: every row is a mask set.

    Returns:
        one :class:`LocoResult` per collection; ``pred``, ``n``... are per mask set.
    """
    x, y = np.asarray(features, float), np.asarray(dice, float)
    hf = np.zeros(len(y), bool) if hard_fail is None else np.asarray(hard_fail, bool)
    ids = np.arange(len(y)) if mask_ids is None else np.asarray(mask_ids)
    out = []

    def per_set(pred, rows):
        _, p = mask_means(pred, ids[rows])
        _, d = mask_means(y[rows], ids[rows])
        _, h = mask_means(hf[rows].astype(float), ids[rows])
        return p, d, h > 0

    for held, tr, te in loco_splits(groups):
        model = fit(x[tr], y[tr], names, alpha)
        p_tr, d_tr, h_tr = per_set(model.predict(x[tr]), tr)
        threshold = choose_threshold(p_tr, d_tr, h_tr)
        pred, d_te, h_te = per_set(model.predict(x[te]), te)
        flag, keep = pass_rates(pred, d_te, threshold, h_te)
        r = pearson(pred, d_te)
        out.append(LocoResult(held, len(d_te), int((d_te < FAILED_BELOW).sum()), int((d_te >= GOOD_FROM).sum()),
                              r, flag, keep, threshold, model, pred))
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two (n,) arrays; NaN below two values or for a constant one."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# -- measuring a Dice estimate against the truth -----------------------------------------------
def mean_dice(masks: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray],
              keys: Sequence[str] = STRUCTURE_KEYS) -> float:
    """True Dice of a mask set: the mean over ``keys`` of each structure's Dice against ``truth``
    (a structure missing from ``masks`` counts as an empty mask)."""
    from anatomix.anatomy import dice

    return float(np.mean([dice(masks.get(k, np.zeros_like(truth[k])), truth[k]) for k in keys]))


def estimate_agreement(estimate: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    """How well a Dice estimate (e.g. ``Dice RCA (Mean)``) tracks the true Dice.

    Args:
        estimate, truth: (n,) values; pairs where either is not finite are left out.

    Returns:
        ``{"n", "pearson", "spearman", "mae", "bias"}`` (bias = mean of estimate - truth);
        correlations and bias are NaN below two pairs.
    """
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(estimate, float), np.asarray(truth, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return {"n": int(len(x)), "pearson": float("nan"), "spearman": float("nan"),
                "mae": float(np.abs(x - y).mean()) if len(x) else float("nan"), "bias": float("nan")}
    return {"n": int(ok.sum()), "pearson": float(pearsonr(x, y)[0]), "spearman": float(spearmanr(x, y)[0]),
            "mae": float(np.abs(x - y).mean()), "bias": float((x - y).mean())}
