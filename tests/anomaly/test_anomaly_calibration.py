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
