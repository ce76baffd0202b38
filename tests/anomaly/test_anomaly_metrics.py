import numpy as np
import pytest

from anatomix.anomaly import metrics


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
    with pytest.raises(ValueError):
        metrics.auroc([0, 0], [1, 2])


def test_roc_plot(tmp_path):
    from PIL import Image

    p = metrics.plot_roc({"a": ([0, 1, 0, 1], [0.1, 0.9, 0.3, 0.4])}, tmp_path / "roc.png")
    image = np.asarray(Image.open(p).convert("RGB")).astype(int)
    assert min(image.shape[:2]) >= 200
    # the curve is drawn in colour: pixels whose channels differ (grey axes and text do not)
    coloured = (image.max(axis=2) - image.min(axis=2)) > 60
    assert coloured.sum() > 100
