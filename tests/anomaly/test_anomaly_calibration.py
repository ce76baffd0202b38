import numpy as np
import pytest
from anomaly_synth import normal_images

from anatomix.anomaly import calibration as cal
from anatomix.errors import UsageError


def test_quantile_threshold_holds_fpr_on_fresh_normals():
    rng = np.random.default_rng(1)
    fprs = []
    for _ in range(20):
        c = cal.fit_region(rng.gamma(2.0, 1.0, 200), 0.05)
        fresh = (rng.gamma(2.0, 1.0, 5000) - c["center"]) / c["scale"]
        fprs.append(np.mean(fresh > c["threshold"]))
    assert abs(np.mean(fprs) - 0.05) < 0.015
    assert max(fprs) < 0.10


@pytest.mark.parametrize("n", [29, 107])
def test_threshold_is_conformal_for_small_calibration_sets(n):
    """With n held-out normals the k-th smallest, k = ceil((n + 1) * 0.95), flags 1 - k / (n + 1)
    of new normals on average: at most 5 %, where the empirical quantile flags more."""
    rng = np.random.default_rng(7)
    k = int(np.ceil((n + 1) * 0.95))
    fpr, fpr_empirical = [], []
    for _ in range(3000):
        normals, fresh = rng.normal(size=n), rng.normal(size=400)
        thr = cal.quantile_threshold(normals, 0.05)
        assert thr == np.sort(normals)[k - 1]
        fpr.append(np.mean(fresh > thr))
        fpr_empirical.append(np.mean(fresh > np.quantile(normals, 0.95, method="higher")))
    assert abs(np.mean(fpr) - (1 - k / (n + 1))) < 0.004
    assert np.mean(fpr) <= 0.05 < np.mean(fpr_empirical)


def test_threshold_with_fewer_normals_than_the_target_allows_is_their_maximum():
    assert cal.quantile_threshold([3.0, 1.0, 2.0, 5.0, 4.0], 0.05) == 5.0


def test_retarget_and_guards():
    c = cal.fit_region(np.arange(100.0), 0.05)
    c10 = cal.retarget(c, 0.10)
    assert c10["threshold"] < c["threshold"]
    with pytest.raises(UsageError):
        cal.fit_region([1.0, 2.0], 0.05)
    with pytest.raises(UsageError):
        cal.quantile_threshold(np.arange(10.0), 1.5)


def test_detector_threshold_holds_fpr_on_fresh_normal_images():
    """Fit on synthetic normals, calibrate on held-out normals, check FPR on new normals."""
    from anatomix.anomaly.train import fit_detector

    imgs = normal_images(260, 32, seed=3)
    det = fit_detector(imgs, "ae", 32, epochs=2, batch_size=32, calib_fraction=0.75, progress=False,
                       model_config={"channels": [8, 16], "latent": 8})
    assert det.meta["n_calibration"] == 195
    fresh = normal_images(400, 32, seed=99)
    maps = det.model_maps(fresh)
    c = det.calibration["image"]
    z = np.array([(det.raw_scores(m, None)["image"] - c["center"]) / c["scale"] for m in maps])
    assert abs(np.mean(z > c["threshold"]) - 0.05) < 0.04
