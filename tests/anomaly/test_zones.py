"""The lung-zone detector (anatomix.anomaly.zones): features, fit on normals, scores, files, ensembles
and the command line, on synthetic films whose lungs are two dark ovals with rectangular masks."""

import numpy as np
import pytest
from anomaly_synth import normal_images
from click.testing import CliRunner
from PIL import Image

from anatomix.anomaly.detector import Detector, RegionScoring, preprocess
from anatomix.anomaly.ensemble import EnsembleDetector
from anatomix.anomaly.scoring import masks_to_model
from anatomix.anomaly.zones import IMAGE_SIZE, N_FEATURES, ZoneDetector, zone_features
from anatomix.errors import UsageError
from anatomix.io import Radiograph

SIZE = 128


def _masks(size: int = SIZE) -> dict:
    """Original-frame masks of the synthetic lungs (right lung on the image's left) and a heart."""
    m = np.zeros((size, size), bool)
    right, left, heart = m.copy(), m.copy(), m.copy()
    right[int(0.22 * size): int(0.78 * size), int(0.17 * size): int(0.43 * size)] = True
    left[int(0.22 * size): int(0.78 * size), int(0.57 * size): int(0.83 * size)] = True
    heart[int(0.55 * size): int(0.75 * size), int(0.42 * size): int(0.6 * size)] = True
    return {"lungR": right, "lungL": left, "heart": heart}


def _opacity(img, cx=0.3, cy=0.3, r=0.08, amount=0.2):
    """A denser (brighter) disc inside a lung, no brighter than the heart: a consolidation."""
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]] / img.shape[0]
    return np.where((xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2, img + amount, img).astype(np.float32)


def _model_frame(images):
    frame = preprocess(images[0], IMAGE_SIZE)[1]
    return np.stack([preprocess(x, IMAGE_SIZE)[0] for x in images]), [masks_to_model(_masks(), frame)] * len(images)


def _films(images):
    return [Radiograph(pixels=np.asarray(x, np.float32)) for x in images]


@pytest.fixture(scope="module")
def fitted():
    normals = normal_images(60, SIZE, seed=5)
    images, masks = _model_frame(normals)
    return ZoneDetector.fit(images, masks, calib_fraction=0.25, seed=0), normal_images(10, SIZE, seed=6)


def test_features_see_an_opacity_in_its_zone_and_on_its_side():
    img = normal_images(1, SIZE, seed=1)[0]
    x, m = _model_frame([img])
    y, _ = _model_frame([_opacity(img)])  # right lung, upper zone
    a, b = zone_features(x[0], m[0]), zone_features(y[0], m[0])
    assert a.shape == (N_FEATURES,) and np.isfinite(a).all()
    # right lung's upper-zone mean rose, so did its right-minus-left difference; the left lung moves
    # only through the per-film intensity normalisation, far less
    assert b[0] > a[0] + 0.05 and b[18] > a[18] + 0.05
    assert np.abs(b[9:18] - a[9:18]).max() < 0.3 * (b[0] - a[0])
    assert np.isnan(zone_features(x[0], {"lungR": m[0]["lungR"]})).all()  # a lung missing: undefined


def test_an_opacity_is_flagged_and_mapped_to_its_zone(fitted):
    det, normals = fitted
    masks = [_masks()] * len(normals)
    held = det.score(_films(normals), masks)
    sick = det.score(_films([_opacity(normals[0])]), masks[:1], keep_maps=True)[0]
    assert sick.anomalous and sick.score > max(r.score for r in held) and sick.score_region == "lungs"
    assert np.mean([r.anomalous for r in held]) <= 0.3
    heat = sick.heatmap
    assert heat.shape == (SIZE, SIZE)
    upper_right = heat[int(0.25 * SIZE): int(0.4 * SIZE), int(0.2 * SIZE): int(0.4 * SIZE)]
    lower_left = heat[int(0.6 * SIZE): int(0.75 * SIZE), int(0.6 * SIZE): int(0.8 * SIZE)]
    assert upper_right.mean() > 2 * lower_left.mean()


def test_save_load_reproduces_scores_exactly(fitted, tmp_path):
    det, normals = fitted
    films, masks = _films(normals[:4]), [_masks()] * 4
    again = Detector.load(det.save(tmp_path / "zones.pt"))
    assert isinstance(again, ZoneDetector)
    assert [r.score for r in again.score(films, masks)] == [r.score for r in det.score(films, masks)]


def test_without_masks_it_refuses_and_a_film_without_lungs_gets_no_score(fitted):
    det, normals = fitted
    with pytest.raises(UsageError, match="needs masks"):
        det.score(_films(normals[:2]))
    res = det.score(_films(normals[:2]), [_masks(), None])  # one film's segmentation failed
    assert np.isfinite(res[0].score) and np.isnan(res[1].score) and not res[1].anomalous


def test_a_zones_member_joins_an_ensemble_that_then_needs_masks(fitted, tmp_path):
    det, normals = fitted
    other = ZoneDetector.from_state(det.state(), "copy")
    ens = EnsembleDetector([det, other], whole_image=[False, True], scoring=RegionScoring(primary="lungs"))
    films, masks = _films(normals), [_masks()] * len(normals)
    ens.calibrate_radiographs(films, masks)
    assert ens.needs_masks and ens.image_size == IMAGE_SIZE
    loaded = Detector.load(ens.save(tmp_path / "ens.pt"))
    assert [r.score for r in loaded.score(films[:3], masks[:3])] == [r.score for r in ens.score(films[:3], masks[:3])]
    images, model_masks = _model_frame(normals)
    ens.calibrate(images, model_masks)  # the `anatomix anomaly calibrate` path: members, then the sum
    assert ens.calibration["lungs"]["n"] == len(normals)


def test_set_target_fpr_moves_the_one_shared_threshold(fitted):
    det, _ = fitted
    copy = ZoneDetector.from_state(det.state(), "copy")
    copy.set_target_fpr(0.3)
    lungs = copy.calibration["lungs"]
    assert all(c is lungs for c in copy.calibration.values())
    assert lungs["threshold"] < det.calibration["lungs"]["threshold"] and lungs["center"] == det.calibration["lungs"]["center"]


def test_cli_fit_zones_needs_masks_and_fits_with_them(tmp_path):
    from anatomix.cli.anomaly import anomaly

    normals = normal_images(24, SIZE, seed=7)
    for i, x in enumerate(normals):
        Image.fromarray((x * 255).astype(np.uint8)).save(tmp_path / f"n{i}.png")
        for k, v in _masks().items():
            Image.fromarray(v.astype(np.uint8) * 255).save(tmp_path / f"n{i}_{k}.png")
    files = [str(tmp_path / f"n{i}.png") for i in range(len(normals))]
    r = CliRunner().invoke(anomaly, ["fit", *files, "-o", str(tmp_path / "z.pt"), "--method", "zones"])
    assert r.exit_code == 2 and "--segment or --masks" in r.output
    r = CliRunner().invoke(anomaly, ["fit", *files, "-o", str(tmp_path / "z.pt"), "--method", "zones",
                                  "--masks", str(tmp_path)])
    assert r.exit_code == 0, r.output
    det = Detector.load(tmp_path / "z.pt")
    assert isinstance(det, ZoneDetector) and det.meta["n_fit"] + det.meta["n_calibration"] == len(normals)


def test_score_without_masks_segments_for_a_detector_that_needs_them(fitted, tmp_path):
    """`anatomix anomaly score` with neither --segment nor --masks: the default segmenter's masks,
    which the rows say (mask_source given), never a whole-image score the detector does not have."""
    import csv

    from anatomix.anomaly.run import score

    det, normals = fitted
    folder = tmp_path / "films"
    folder.mkdir()
    for i, x in enumerate(normals[:3]):
        Image.fromarray((x * 255).astype(np.uint8)).save(folder / f"n{i}.png")
    report = score([folder], tmp_path / "s.csv", detector=det.save(tmp_path / "z.pt"))
    assert len(report.results) == 3 and not report.errors
    with open(tmp_path / "s.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["mask_source"] for r in rows] == ["given"] * 3 and {r["score_region"] for r in rows} == {"lungs"}


def test_fit_holds_out_the_films_that_fit_order_names(tmp_path):
    """`anatomix anomaly fit` reads its inputs sorted, not in the order listed: a tool that calibrates an
    ensemble on a fit's held-out normals must split fit_order(inputs), or it calibrates on films the
    detector was fitted on (the adult ensemble's first build did)."""
    from anatomix.anomaly.run import fit, fit_order
    from anatomix.anomaly.train import split_calibration
    from anatomix.io import read_radiograph

    files = []
    for i, x in enumerate(normal_images(24, SIZE, seed=8)):
        files.append(tmp_path / f"n{i:02d}.png")
        Image.fromarray((x * 255).astype(np.uint8)).save(files[-1])
        for k, v in _masks().items():
            Image.fromarray(v.astype(np.uint8) * 255).save(tmp_path / f"n{i:02d}_{k}.png")
    listed = files[::-1]
    order = fit_order(listed)
    assert order == sorted(order) and {p.name for p in order} == {p.name for p in files}
    det = fit(listed, tmp_path / "z.pt", method="zones", mask_dir=tmp_path).detector
    held = [read_radiograph(order[i]) for i in split_calibration(len(order))[1]]
    assert det.meta["held_out"] == [str(order[i]) for i in split_calibration(len(order))[1]]
    again = [r.raw["image"] for r in det.score(held, [_masks()] * len(held))]
    assert np.allclose(sorted(again), sorted(det.calibration["image"]["raw"]))
    wrong = [read_radiograph(listed[i]) for i in split_calibration(len(listed))[1]]
    assert not np.allclose(sorted(r.raw["image"] for r in det.score(wrong, [_masks()] * len(wrong))),
                           sorted(det.calibration["image"]["raw"]))
