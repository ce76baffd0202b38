"""Graph-vs-pixel agreement (anatomix.qc.agreement): per-structure Dice between two mask sets of
one image, and the refined segmenter's two results carried in ``Segmentation.extra``."""

import numpy as np
import pytest
from refine_doubles import GraphDouble, PixelDouble

from anatomix.anatomy import LUNGS_HEART
from anatomix.errors import UsageError
from anatomix.io.record import Radiograph
from anatomix.qc.agreement import (
    agreement_figures,
    refined_agreement,
    structure_agreement,
)
from anatomix.refine import GRAPH_LANDMARKS_KEY, PIXEL_MASKS_KEY, RefinedSegmenter
from anatomix.segmentation import Segmentation


def _box(y0, y1, x0, x1, shape=(40, 40)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_identical_masks_agree_fully():
    a = {"lungR": _box(5, 30, 2, 15), "lungL": _box(5, 30, 22, 38), "heart": _box(20, 35, 12, 28)}
    per = structure_agreement(a, {k: m.copy() for k, m in a.items()})
    assert per == {"lungR": 1.0, "lungL": 1.0, "heart": 1.0}
    assert agreement_figures(per)["agree_min"] == 1.0


def test_disjoint_masks_do_not_agree():
    per = structure_agreement({"heart": _box(0, 10, 0, 10)}, {"heart": _box(20, 30, 20, 30)})
    assert per == {"heart": 0.0}


def test_partial_overlap_exact_value_and_minimum():
    # 10x10 and 10x10 sharing 10x5: Dice = 2 * 50 / 200; 10x10 inside 10x20: 2 * 100 / 300
    a = {"lungR": _box(0, 10, 0, 10), "lungL": _box(0, 10, 20, 30)}
    b = {"lungR": _box(0, 10, 5, 15), "lungL": _box(0, 10, 20, 40)}
    per = structure_agreement(a, b)
    assert per["lungR"] == pytest.approx(0.5, abs=1e-12)
    assert per["lungL"] == pytest.approx(2 / 3, abs=1e-12)
    fig = agreement_figures(per)
    assert fig == {"agree_lungR": per["lungR"], "agree_lungL": per["lungL"], "agree_min": per["lungR"]}


def test_only_shared_structures_and_empty_pairs():
    a = {"lungR": np.zeros((8, 8), bool), "heart": _box(1, 4, 1, 4, (8, 8))}
    per = structure_agreement(a, {"lungR": np.zeros((8, 8), bool)})
    assert per == {"lungR": 1.0}  # both empty: agree; heart is not in both, skipped
    assert np.isnan(agreement_figures({})["agree_min"])


def test_mismatched_shapes_or_missing_keys_raise():
    with pytest.raises(UsageError, match="shapes differ"):
        structure_agreement({"heart": np.zeros((8, 8), bool)}, {"heart": np.zeros((8, 9), bool)})
    with pytest.raises(UsageError, match="not in both"):
        structure_agreement({"heart": np.zeros((8, 8), bool)}, {}, keys=["heart"])


def test_refined_segmenter_carries_both_models_results():
    seg = RefinedSegmenter(GraphDouble(), PixelDouble()).predict([Radiograph(np.zeros((64, 64), np.float32))])[0]
    assert seg.extra[GRAPH_LANDMARKS_KEY].shape == (LUNGS_HEART.n_nodes, 2)
    assert set(seg.extra[PIXEL_MASKS_KEY]) == {"lungR", "lungL", "heart"}
    per = refined_agreement(seg)
    # circle of radius 6 inside a disk of radius 8: Dice = 2 * 36 / (36 + 64) = 0.72 (rasterised)
    for key in ("lungR", "lungL", "heart"):
        assert per[key] == pytest.approx(0.72, abs=0.03)


def test_refined_agreement_is_none_for_other_families():
    seg = Segmentation("x", None, (8, 8), LUNGS_HEART, np.zeros((120, 2)), {})
    assert refined_agreement(seg) is None
