import json

import numpy as np
import pytest

from anatomix.anomaly import metrics
from anatomix.errors import UsageError


def test_auroc_matches_monai_with_ties():
    import torch
    from monai.metrics import compute_roc_auc

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounded: many ties
    ref = compute_roc_auc(torch.tensor(s), torch.tensor(y))
    assert metrics.auroc(y, s) == pytest.approx(float(ref), abs=1e-9)


def test_perfect_and_reversed():
    y = [0, 0, 1, 1]
    assert metrics.auroc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.auroc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.average_precision(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.tpr_at_fpr(y, [0.1, 0.2, 0.8, 0.9], 0.05) == 1.0


def test_ap_and_tpr_hand_computed():
    y = [1, 0, 1, 0]
    s = [0.9, 0.8, 0.7, 0.1]
    # ranks: 1 (P=1, R=.5), 0, 1 (P=2/3, R=1) -> AP = .5*1 + .5*2/3
    assert metrics.average_precision(y, s) == pytest.approx(0.5 + 1 / 3)
    assert metrics.tpr_at_fpr(y, s, 0.0) == 0.5
    assert metrics.tpr_at_fpr(y, s, 0.5) == 1.0


def test_needs_both_classes():
    with pytest.raises(UsageError):
        metrics.auroc([0, 0], [1, 2])


def _coloured(path) -> np.ndarray:
    """(row, col) of the pixels drawn in colour (channels differ: not the grey axes, ticks or text)."""
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return np.argwhere((image.max(axis=2) - image.min(axis=2)) > 60)


def test_roc_plot_draws_the_curve_where_it_runs(tmp_path):
    y = [0, 0, 1, 1]
    good = _coloured(metrics.plot_roc({"a": (y, [0.1, 0.2, 0.8, 0.9])}, tmp_path / "good.png"))
    bad = _coloured(metrics.plot_roc({"a": (y, [0.9, 0.8, 0.2, 0.1])}, tmp_path / "bad.png"))
    assert len(good) > 100 and len(bad) > 100
    # a perfect ranking runs up the left edge and along the top (0,0)-(0,1)-(1,1); a reversed one
    # along the bottom and up the right edge (0,0)-(1,0)-(1,1): image rows grow downwards
    (gr, gc), (br, bc) = good.mean(0), bad.mean(0)
    assert gr < br - 50 and gc < bc - 50


def test_evaluate_writes_the_roc_values(tmp_path):
    from anatomix.anomaly import run
    from anatomix.errors import ReadError

    scores = tmp_path / "scores.csv"
    scores.write_text("image_id,path,score,anomalous,score_region,score_lungs,score_heart\n"
                      "a,/x/a.png,0.1,0,image,0.9,\n"
                      "b,/x/b.png,0.2,1,image,0.8,\n"
                      "c,/x/c.png,0.8,1,image,0.2,\n"
                      "d,/x/d.png,0.9,1,image,0.1,\n"
                      "e,/x/e.png,5.0,1,image,5.0,\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n/any/a.png,normal\n/any/b.png,normal\n/any/c.png,abnormal\n/any/d.png,1\n")
    report = run.evaluate(scores, labels, tmp_path / "ev")
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m == report.metrics
    assert m["score"]["auroc"] == 1.0 and m["score_lungs"]["auroc"] == 0.0
    assert "score_heart" not in m  # empty for the labelled images: not evaluated
    assert (m["score"]["n_normal"], m["score"]["n_abnormal"], m["unlabelled"]) == (2, 2, 1)
    assert m["threshold"] == {"fpr": 0.5, "tpr": 1.0}
    md = (tmp_path / "ev" / "metrics.md").read_text()
    assert "| score | 1.000 | 1.000 | 1.000 | 1.000 | 2 | 2 |" in md and "FPR 0.500, TPR 1.000" in md
    assert len(_coloured(report.roc_path)) > 100

    labels.write_text("id,label\na,normal\nb,normal\n")
    with pytest.raises(UsageError, match="normal and abnormal"):
        run.evaluate(scores, labels, tmp_path / "ev")
    (tmp_path / "other.csv").write_text("image_id,value\na,1\n")
    with pytest.raises(ReadError, match="not a scores.csv"):
        run.evaluate(tmp_path / "other.csv", labels)
