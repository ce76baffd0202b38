"""Per-structure quality signals (anatomix.qc.signals) and the bundled predicted-Dice model on
hand-made good and bad masks (no data pack needed)."""

import numpy as np
import pytest

from anatomix.qc.signals import (
    SIGNALS,
    Opinion,
    signal_matrix,
    structure_signals,
    typical_area,
)

S = 200


def _disc(cy, cx, r, shape=(S, S)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(yy - cy, xx - cx) <= r


def _truth():
    # areas near each structure's typical fraction of the image
    side = {k: float(np.sqrt(typical_area(k) * S * S / np.pi)) for k in ("lungR", "lungL", "heart")}
    return {"lungR": _disc(90, 55, side["lungR"]), "lungL": _disc(90, 145, side["lungL"]),
            "heart": _disc(130, 110, side["heart"])}


def _shift(masks, dx):
    return {k: np.roll(m, dx, axis=1) for k, m in masks.items()}


def test_signals_of_a_mask_equal_to_both_opinions():
    t = _truth()
    sig = structure_signals(t, Opinion(t, t, {"lungR": 0.002}), {"lungR": 0.9})
    assert list(sig) == ["lungR", "lungL", "heart"]
    r = sig["lungR"]
    assert r["agree"] == 1.0 and r["agree_pair"] == 1.0 and r["node_std"] == 0.002 and r["rca"] == 0.9
    assert r["extra_components"] == 0.0 and r["holes"] == 0.0 and r["area_log"] < 0.05
    assert np.isnan(sig["lungL"]["node_std"]) and np.isnan(sig["lungL"]["rca"])
    assert signal_matrix(sig).shape == (3, len(SIGNALS))


def test_agreement_is_the_worse_of_the_two_opinions_and_topology_counts():
    t = _truth()
    bad = _shift(t, 20)
    sig = structure_signals(bad, Opinion(t, _shift(t, 10), {}))
    from anatomix.anatomy import dice

    assert sig["lungR"]["agree"] == pytest.approx(min(dice(bad["lungR"], t["lungR"]), dice(bad["lungR"], _shift(t, 10)["lungR"])))
    assert sig["lungR"]["agree_pair"] < 1.0
    two = dict(t, lungL=t["lungL"] | _disc(180, 180, 8))
    holed = dict(t, lungR=t["lungR"] & ~_disc(90, 55, 6))
    assert structure_signals(two)["lungL"]["extra_components"] == pytest.approx(np.log(2))
    assert structure_signals(holed)["lungR"]["holes"] == pytest.approx(np.log(2))
    assert np.isnan(structure_signals(t)["heart"]["agree"])  # no opinion: NaN


def test_bundled_model_passes_good_masks_and_fails_bad_ones():
    """The bundled DiceModel on hand-made masks: a mask agreeing with both second-opinion models
    and with RCA predicts a Dice above its threshold; the same masks shifted off the anatomy (the
    opinions and RCA disagree) predict one below it, and lower the further they are shifted."""
    from anatomix.qc.quality import bundled_dice_model

    model = bundled_dice_model()
    if model is None:
        pytest.skip("no bundled qc_dice_model.json (tools/build_qc_dice_model.py builds it)")
    t = _truth()
    opinion = Opinion(t, t, {k: 0.003 for k in t})

    def predicted(masks, rca):
        return float(model.predict(signal_matrix(structure_signals(masks, opinion, rca))).mean())

    good = predicted(t, {k: 0.9 for k in t})
    worse = [predicted(_shift(t, dx), {k: 0.9 - dx / 50 for k in t}) for dx in (10, 20, 30)]
    assert good >= model.threshold > worse[1]
    assert good > worse[0] > worse[1] > worse[2]
