"""Post-processing removes islands and fills holes; topology counts them."""

import numpy as np

from anatomix.pixel.postprocess import (
    clean_mask,
    fill_holes,
    largest_component,
    postprocess_masks,
    topological_error,
    topology,
)


def _blob():
    m = np.zeros((40, 40), bool)
    m[5:30, 5:25] = True
    return m


def test_islands_removed_and_main_body_kept():
    m = _blob()
    noisy = m.copy()
    noisy[33:36, 33:36] = True  # island
    noisy[0, 39] = True  # single-pixel island
    out = largest_component(noisy)
    assert np.array_equal(out, m)
    assert topology(noisy)["components"] == 3 and topology(out)["components"] == 1


def test_holes_filled_but_border_notches_kept():
    m = _blob()
    holed = m.copy()
    holed[12:16, 10:14] = False  # a hole
    holed[5:8, 5:8] = False  # a notch on the outline: not a hole
    out = fill_holes(holed)
    expected = m.copy()
    expected[5:8, 5:8] = False
    assert np.array_equal(out, expected)
    assert topology(holed)["holes"] == 1 and topology(out)["holes"] == 0


def test_clean_and_topological_error():
    m = _blob()
    bad = m.copy()
    bad[12:16, 10:14] = False
    bad[33:36, 33:36] = True
    assert topological_error(bad) and not topological_error(m)
    assert topological_error(np.zeros((8, 8), bool))  # missing structure
    cleaned = clean_mask(bad)
    assert np.array_equal(cleaned, m) and not topological_error(cleaned)


def test_postprocess_leaves_input_untouched_per_structure():
    raw = {"lungR": _blob(), "heart": _blob()}
    raw["lungR"][33:36, 33:36] = True
    before = {k: v.copy() for k, v in raw.items()}
    out = postprocess_masks(raw)
    for k, v in raw.items():
        assert np.array_equal(v, before[k])
    assert topology(out["lungR"])["components"] == 1
    assert np.array_equal(out["heart"], before["heart"])
