"""Detector: save/load reproduces scores exactly, any image size, masked regions, heat maps."""

import numpy as np
import pytest
from anomaly_synth import normal_images, with_blob

from anatomix.anomaly.detector import Detector, ScoringConfig
from anatomix.anomaly.train import fit_detector, split_calibration
from anatomix.errors import AnatomixError, UsageError
from anatomix.io.record import Radiograph

TINY = {"ae": {"channels": [8, 16], "latent": 8}, "mae": {"patch": 8, "dim": 32, "depth": 1, "dec_depth": 1,
                                                           "heads": 2, "mem_slots": 4}}


def _masks(shape):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    lr = (xx < w * 0.45) & (yy > h * 0.2) & (yy < h * 0.8)
    ll = (xx > w * 0.55) & (yy > h * 0.2) & (yy < h * 0.8)
    heart = (abs(xx - w / 2) < w * 0.1) & (yy > h * 0.5) & (yy < h * 0.75)
    return {"lungR": lr, "lungL": ll, "heart": heart}


@pytest.fixture(scope="module", params=["ae", "mae", "ae+critic"])
def detector(request):
    imgs = normal_images(60, 32, seed=5)
    m = _masks((32, 32))
    method, critic = request.param.split("+")[0], request.param.endswith("+critic")
    return fit_detector(imgs, method, 32, epochs=2, batch_size=16, progress=False,
                        calib_fraction=0.3, calib_masks=[m] * len(imgs), model_config=TINY[method],
                        scoring=ScoringConfig(residual="ssim+critic") if critic else None,
                        critic_epochs=2 if critic else 0)


def _rads(n=5, shape=(40, 52)):
    from PIL import Image

    out = []
    for i, im in enumerate(normal_images(n, 48, seed=11)):
        a = np.asarray(Image.fromarray((im * 255).astype(np.uint8)).resize(shape[::-1]), np.float32) / 255
        out.append(Radiograph(a if i else with_blob(a), path=None))
    return out


def test_split_is_deterministic_and_disjoint():
    f, c = split_calibration(100, 0.1, seed=3)
    f2, c2 = split_calibration(100, 0.1, seed=3)
    assert np.array_equal(f, f2) and np.array_equal(c, c2)
    assert len(c) == 10 and not set(f) & set(c) and len(f) + len(c) == 100


def test_save_load_reproduces_scores_exactly(detector, tmp_path):
    rads = _rads()
    masks = [_masks(r.shape) for r in rads]
    a = detector.score(rads, masks, keep_maps=True)
    p = detector.save(tmp_path / "det.pt")
    det2 = Detector.load(p)
    b = det2.score(rads, masks, keep_maps=True)
    for x, y in zip(a, b):
        assert x.score == y.score and x.anomalous == y.anomalous and x.regions == y.regions and x.raw == y.raw
        assert np.array_equal(x.heatmap, y.heatmap)
    assert det2.scoring == detector.scoring and det2.calibration == detector.calibration
    assert det2.component_stats == detector.component_stats
    # one image alone scores as inside the batch, up to float rounding (batch-dependent CPU kernels;
    # the normalised score divides a raw difference of ~1e-6 by the normals' spread)
    one = det2.score(rads[2:3], masks[2:3])[0]
    assert one.score == pytest.approx(a[2].score, rel=1e-4, abs=1e-4)


def test_regions_heatmap_and_sizes(detector):
    rads = _rads(3, (40, 52))
    res = detector.score(rads, [_masks(r.shape) for r in rads], keep_maps=True)
    r = res[0]
    assert r.heatmap.shape == (40, 52) and r.model_map.shape == (32, 32)
    assert set(r.regions) == {"image", "lungs", "lungR", "lungL", "heart", "anatomy"}
    assert r.score_region == "lungs" and r.score == r.regions["lungs"]
    whole = detector.score(rads)[0]
    assert whole.score_region == "image" and set(whole.regions) == {"image"} and whole.mask_source == "none"
    assert whole.score == pytest.approx(r.regions["image"])


def test_threshold_retarget(detector):
    det = Detector(detector.model, ScoringConfig(**vars(detector.scoring)), dict(detector.calibration))
    t5 = det.calibration["image"]["threshold"]
    det.set_target_fpr(0.2)
    assert det.calibration["image"]["threshold"] <= t5


def test_load_rejects_garbage(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"not a detector")
    with pytest.raises(AnatomixError, match="x.pt"):
        Detector.load(p)


def test_scoring_config_validates():
    with pytest.raises(UsageError, match="residual"):
        ScoringConfig(residual="nope")


def test_prior_masks_used_without_masks_and_saved(tmp_path):
    imgs = normal_images(30, 32, seed=8)
    prior = _masks((32, 32))
    det = fit_detector(imgs, "ae", 32, epochs=1, batch_size=16, progress=False, calib_fraction=0.3,
                       model_config=TINY["ae"], prior_masks=prior)
    assert {"lungs", "heart"} <= set(det.calibration)
    rads = _rads(2, (32, 32))
    a = det.score(rads)
    assert a[0].mask_source == "prior" and a[0].score_region == "lungs"
    given = det.score(rads, [_masks((32, 32))] * 2)
    assert given[0].mask_source == "given" and given[0].score == pytest.approx(a[0].score)
    det2 = Detector.load(det.save(tmp_path / "p.pt"))
    assert all(np.array_equal(det2.prior_masks[k], prior[k]) for k in prior)
    assert [r.score for r in det2.score(rads)] == [r.score for r in a]


def test_pixel_norm_maps_are_saved_and_reproduced(tmp_path):
    imgs = normal_images(30, 32, seed=9)
    det = fit_detector(imgs, "ae", 32, epochs=1, batch_size=16, progress=False, calib_fraction=0.3,
                       model_config=TINY["ae"], scoring=ScoringConfig(pixel_norm=True))
    assert det.pixel_stats is not None and det.pixel_stats[0].shape == (32, 32)
    z = det.model_maps(imgs[:8])
    assert abs(float(z.mean())) < 1.0  # z-scored against normals
    det2 = Detector.load(det.save(tmp_path / "z.pt"))
    assert np.array_equal(det2.model_maps(imgs[:8]), z)
    assert [r.score for r in det2.score(_rads(2, (32, 32)))] == [r.score for r in det.score(_rads(2, (32, 32)))]
