"""Predicted Dice (anatomix.qc.quality): ridge fit, threshold choice, and leave-one-collection-out
validation that never lets a collection's masks into its own calibration."""

import numpy as np
import pytest

from anatomix.qc.quality import (
    DiceModel,
    choose_threshold,
    loco_evaluate,
    loco_splits,
    pass_rates,
)


def _table(seed=0):
    """Three collections; Dice = 0.5 + 0.5 * agreement-like feature, plus noise; 'poison' is
    a collection whose Dice is the OPPOSITE of its feature."""
    rng = np.random.default_rng(seed)
    groups, xs, ys = [], [], []
    for name, sign in (("alpha", 1), ("beta", 1), ("poison", -1)):
        a = rng.uniform(0, 1, 40)
        xs.append(np.stack([a, rng.normal(0, 1, 40)], axis=1))
        ys.append(np.clip(0.5 + sign * 0.5 * (a - 0.5) + 0.5 * (sign < 0), 0, 1) + rng.normal(0, 0.005, 40))
        groups += [name] * 40
    return np.concatenate(xs), np.concatenate(ys), np.array(groups)


def test_splits_hold_each_collection_out_entirely():
    groups = np.array(["a", "b", "a", "c", "b", "c", "c"])
    seen = []
    for held, tr, te in loco_splits(groups):
        seen.append(held)
        assert set(groups[te]) == {held}
        assert held not in set(groups[tr])
        assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(groups)))
    assert seen == ["a", "b", "c"]


def test_fit_and_threshold_see_only_the_other_collections():
    x, y, g = _table()
    calls = []

    def spy(features, dice, names, alpha):
        calls.append(len(dice))
        return DiceModel.fit(features, dice, names, alpha)

    results = loco_evaluate(x, y, g, names=["agree", "noise"], fit=spy)
    assert calls == [80, 80, 80]
    for res in results:
        train = g != res.held_out
        # the same model and threshold as fitting on the other collections alone
        ref = DiceModel.fit(x[train], y[train], ["agree", "noise"])
        assert np.allclose(res.model.coef, ref.coef) and res.model.intercept == pytest.approx(ref.intercept)
        assert res.threshold == pytest.approx(choose_threshold(ref.predict(x[train]), y[train]))
    by = {r.held_out: r for r in results}
    # held out, 'poison' is predicted by a law learnt on alpha + beta alone: exactly reversed
    assert by["poison"].pearson_r < -0.9
    # with 'poison' among the training collections (alpha held out), the learnt slope is weaker
    assert by["alpha"].model.coef[0] < by["poison"].model.coef[0]


def test_ridge_recovers_a_linear_law_and_clips():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 200)
    x = np.stack([a, rng.normal(0, 1, 200)], axis=1)
    m = DiceModel.fit(x, 0.6 + 0.3 * a, alpha=1e-6)
    assert np.allclose(m.predict(x), 0.6 + 0.3 * a, atol=1e-6)
    assert m.predict(np.array([[10.0, 0.0]]))[0] == 1.0
    # a missing figure is replaced by the training mean: contributes nothing
    assert m.predict(np.array([[np.nan, 0.0]]))[0] == pytest.approx(0.6 + 0.3 * a.mean(), abs=1e-3)


def test_threshold_separates_failed_from_good_and_hard_failures_flag():
    dice = np.array([0.5, 0.7, 0.79, 0.95, 0.96, 0.97])
    pred = np.array([0.6, 0.72, 0.8, 0.9, 0.92, 0.94])
    t = choose_threshold(pred, dice)
    assert 0.8 < t < 0.9
    assert pass_rates(pred, dice, t) == (1.0, 1.0)
    hard = np.array([False, False, False, True, False, False])
    assert pass_rates(pred, dice, t, hard) == (1.0, pytest.approx(2 / 3))


def test_mean_dice_and_estimate_agreement():
    from anatomix.qc.quality import estimate_agreement, mean_dice

    m = np.zeros((10, 10), bool)
    m[:5] = True
    truth = {"lungR": m, "lungL": m, "heart": m}
    assert mean_dice(truth, truth) == 1.0
    assert mean_dice({"lungR": m, "lungL": m}, truth) == pytest.approx(2 / 3)  # missing heart: empty
    assert mean_dice({"lungR": m[::-1]}, truth, keys=("lungR",)) == 0.0
    t = np.array([0.2, 0.5, 0.7, 0.9, np.nan])
    s = estimate_agreement(t + 0.1, t)
    assert s["n"] == 4 and s["pearson"] == pytest.approx(1.0) and s["spearman"] == pytest.approx(1.0)
    assert s["mae"] == pytest.approx(0.1) and s["bias"] == pytest.approx(0.1)
    one = estimate_agreement(np.array([0.5]), np.array([0.7]))
    assert one["n"] == 1 and one["mae"] == pytest.approx(0.2) and np.isnan(one["pearson"])


def test_loco_over_mask_sets_never_calibrates_on_the_held_out_collection(monkeypatch):
    """Rows are structures of mask sets; neither the fit nor the threshold of a fold may see a row
    of the held-out collection, and its figures are over the held-out mask sets only."""
    import anatomix.qc.quality as quality

    rng = np.random.default_rng(3)
    groups = np.repeat(["a", "b", "c"], [30, 45, 60])
    code = {"a": 0.0, "b": 1.0, "c": 2.0}
    agree = rng.uniform(0.5, 1.0, len(groups))
    x = np.stack([agree, [code[g] for g in groups]], axis=1)  # column 1 says which collection
    y = np.clip(agree + rng.normal(0, 0.01, len(groups)), 0, 1)
    ids = np.array([f"{g}{i // 3}" for i, g in enumerate(groups)])  # three structures per mask set
    seen = {}

    def spy_fit(features, dice, names, alpha):
        seen.setdefault("fit", []).append(set(features[:, 1].tolist()))
        return DiceModel.fit(features, dice, names, alpha)

    real_choose = quality.choose_threshold

    def spy_choose(pred, dice, hard_fail=None):
        seen.setdefault("threshold", []).append(len(pred))
        return real_choose(pred, dice, hard_fail)

    monkeypatch.setattr(quality, "choose_threshold", spy_choose)
    results = loco_evaluate(x, y, groups, ["agree", "collection"], fit=spy_fit, mask_ids=ids)
    assert [r.held_out for r in results] == ["a", "b", "c"]
    assert seen["fit"] == [{1.0, 2.0}, {0.0, 2.0}, {0.0, 1.0}]
    assert seen["threshold"] == [(45 + 60) // 3, (30 + 60) // 3, (30 + 45) // 3]  # mask sets of the others
    assert [r.n for r in results] == [10, 15, 20] and all(len(r.pred) == r.n for r in results)


def test_dice_model_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (50, 3))
    m = DiceModel.fit(x, 0.5 + 0.4 * x[:, 0], ["a", "b", "c"])
    m.threshold, m.meta = 0.85, {"command": "test"}
    m.save(tmp_path / "m.json")
    back = DiceModel.load(tmp_path / "m.json")
    assert np.allclose(back.predict(x), m.predict(x)) and back.threshold == 0.85 and back.meta == {"command": "test"}
