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


def test_product_features_and_columns_by_name():
    from anatomix.qc.signals import FEATURES, feature_value

    t = _truth()
    sig = structure_signals(t, Opinion(t, _shift(t, 10), {}), {"lungR": 0.8, "lungL": 0.9, "heart": 0.7})
    r = sig["heart"]
    assert feature_value(r, "rca*agree_pair") == pytest.approx(0.7 * r["agree_pair"])
    assert feature_value(r, "agree*agree_pair") == pytest.approx(r["agree"] * r["agree_pair"])
    m = signal_matrix(sig, names=FEATURES)
    assert m.shape == (3, len(FEATURES)) and FEATURES[: len(SIGNALS)] == SIGNALS
    np.testing.assert_allclose(m[:, : len(SIGNALS)], signal_matrix(sig))
    assert np.isnan(feature_value(structure_signals(t)["heart"], "rca*agree_pair"))


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
        return float(model.predict(signal_matrix(structure_signals(masks, opinion, rca), names=model.names)).mean())

    good = predicted(t, {k: 0.9 for k in t})
    worse = [predicted(_shift(t, dx), {k: 0.9 - dx / 50 for k in t}) for dx in (10, 20, 30)]
    assert good >= model.threshold > worse[1]
    assert good > worse[0] > worse[1] > worse[2]


@pytest.fixture(scope="module")
def film_and_refined():
    """A synthetic film (an atlas image at 384 px) and the bundled refined segmenter with QC's
    10 uncertainty draws (what ``anatomix segment`` runs when QC is on)."""
    pytest.importorskip("torch_geometric")
    from anatomix.io.record import Radiograph
    from anatomix.models import load_segmenter
    from anatomix.qc.rca import load_references

    refs = load_references(None)
    model = load_segmenter("refined")
    model.uncertainty_samples = 10
    return Radiograph(np.kron(refs.images[3], np.ones((3, 3), np.float32))), model


def test_second_opinion_reused_from_a_refined_segmentation_is_the_same(film_and_refined):
    """Segment's own graph and pixel results stand in for the second opinion exactly (masks and
    node std), and only when they come from the opinion's own two models."""
    from anatomix.models import load_segmenter
    from anatomix.qc.signals import SecondOpinion

    film, model = film_and_refined
    seg = model.predict([film])[0]
    opinion = SecondOpinion.bundled()
    reused, ran = opinion.reuse(seg, model, film), opinion(film)
    assert reused is not None
    own_graph, own_pixel = opinion.graph.predict([film])[0], opinion.pixel.predict([film])[0]
    own_std = opinion.graph.sample(film, opinion.samples)[1] / max(film.shape)
    for k, sl in opinion.graph.template.slices().items():  # the opinion is the models' own predict
        assert np.array_equal(ran.graph_masks[k], own_graph.masks[k])
        assert np.array_equal(ran.pixel_masks[k], own_pixel.masks[k])
        assert ran.node_std[k] == pytest.approx(float(own_std[sl].mean()), rel=1e-12)
    for k in ran.graph_masks:
        assert np.array_equal(reused.graph_masks[k], ran.graph_masks[k])
        assert np.array_equal(reused.pixel_masks[k], ran.pixel_masks[k])
        assert reused.node_std[k] == pytest.approx(ran.node_std[k], rel=1e-9)
    model.uncertainty_samples = 0  # no draws in the segmentation: the opinion draws them itself
    try:
        again = opinion.reuse(model.predict([film])[0], model, film)
    finally:
        model.uncertainty_samples = 10
    assert again.node_std == pytest.approx(ran.node_std)
    graph = load_segmenter("graph")
    assert opinion.reuse(graph.predict([film])[0], graph, film) is None  # not a refined pair
    assert opinion.reuse(seg, None, film) is None


def test_assess_with_the_segmenter_gives_the_same_prediction(film_and_refined):
    from anatomix.qc import assess

    film, model = film_and_refined
    seg = model.predict([film])[0]
    a = assess(seg, film.pixels, segmenter=model)
    b = assess(seg, film.pixels)
    for c in ("agree_min", "Predicted Dice", "pred_dice_heart", "Dice RCA (Mean)", "qc_pass"):
        assert a[c] == b[c]


def test_flip_test_twin_gives_the_segmenters_landmarks_without_draws(film_and_refined):
    """The mirrored-image test runs the opinion's own models in place of the bundled refined
    segmenter: the same landmarks (so the same flip_gain), no draws; any other model: no twin."""
    from anatomix.io.record import Radiograph
    from anatomix.models import load_segmenter
    from anatomix.qc.orientation import flip_gain, lungs_heart_landmarks
    from anatomix.qc.shape_model import default_shape_model
    from anatomix.qc.signals import SecondOpinion

    film, model = film_and_refined
    opinion = SecondOpinion.bundled()
    twin = opinion.twin(model)
    assert twin is not None and opinion.twin(load_segmenter("graph")) is None
    flipped = Radiograph(np.ascontiguousarray(film.pixels[:, ::-1]))
    a, b = twin.predict([flipped])[0], model.predict([flipped])[0]
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert a.node_std is None and b.node_std is not None
    lm, sm = lungs_heart_landmarks(model.predict([film])[0]), default_shape_model()
    assert flip_gain(twin, film.pixels, lm, sm) == flip_gain(model, film.pixels, lm, sm)
