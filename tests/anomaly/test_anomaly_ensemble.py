"""Ensembles of detectors: the sum of members' z-scores, calibrated as a whole; save/load, the
commands and the export refusal, on tiny detectors fitted on synthetic radiographs."""

import numpy as np
import pytest
from anomaly_synth import normal_images, with_blob
from click.testing import CliRunner
from PIL import Image

from anatomix.anomaly.detector import (
    Detector,
    RegionScoring,
    ScoringConfig,
    calibrate_on,
    preprocess,
)
from anatomix.anomaly.ensemble import EnsembleDetector, added_member
from anatomix.anomaly.scoring import masks_to_model
from anatomix.anomaly.train import fit_detector
from anatomix.errors import UsageError
from anatomix.io import Radiograph


def _masks(size: int) -> dict:
    """Two 'lungs' and a 'heart' as original-frame bool masks of a ``size`` film."""
    m = np.zeros((size, size), bool)
    left, right, heart = m.copy(), m.copy(), m.copy()
    left[size // 4: 3 * size // 4, size // 8: size // 2 - 2] = True
    right[size // 4: 3 * size // 4, size // 2 + 2: 7 * size // 8] = True
    heart[size // 2: 3 * size // 4, 3 * size // 8: 5 * size // 8] = True
    return {"lungR": left, "lungL": right, "heart": heart}


@pytest.fixture(scope="module")
def members():
    """An ``ae`` at 32 px (masked regions calibrated) and an ``rd`` at 64 px scored on the whole image."""
    normals = normal_images(24, 64, seed=3)
    small = np.stack([preprocess(x, 32)[0] for x in normals])
    frame = preprocess(normals[0], 32)[1]
    ae = fit_detector(small, "ae", 32, epochs=2, batch_size=8, progress=False,
                      calib_masks=[masks_to_model(_masks(64), frame)] * len(small))
    rd = fit_detector(normals, "rd", 64, epochs=1, batch_size=8, progress=False,
                      model_config={"channels": [4, 8, 8, 16], "teacher_epochs": 1},
                      scoring=ScoringConfig(residual="auto", reduce="topk", primary="image"))
    return ae, rd, normals


def _films(images):
    return [Radiograph(pixels=np.asarray(x, np.float32)) for x in images]


def test_the_sum_of_member_z_scores_is_calibrated_as_a_whole(members):
    ae, rd, normals = members
    ens = EnsembleDetector([ae, rd], whole_image=[False, True], scoring=RegionScoring(primary="lungs"))
    films, masks = _films(normals[:12]), [_masks(64)] * 12
    ens.calibrate_radiographs(films, masks)
    assert set(ens.calibration) == set(ae.calibration)  # every region of the masked member
    test = _films([normals[12], with_blob(normals[13], r=0.12)])
    res, a, r = ens.score(test, [_masks(64)] * 2), ae.score(test, [_masks(64)] * 2), rd.score(test, [_masks(64)] * 2)
    for e, x, y in zip(res, a, r):
        # the whole-image member adds its image z-score to every region of the other one
        assert e.raw == pytest.approx({k: x.regions[k] + y.regions["image"] for k in x.regions})
        assert e.score_region == "lungs" and e.threshold == ens.calibration["lungs"]["threshold"]
        assert e.score == pytest.approx((e.raw["lungs"] - ens.calibration["lungs"]["center"])
                                        / ens.calibration["lungs"]["scale"])
    # without masks: the whole image only
    assert {r.score_region for r in ens.score(test)} == {"image"}


def test_calibrate_on_original_frame_masks_calibrates_every_masked_region(members):
    """A member added to an ensemble is calibrated from films and their ORIGINAL-frame masks: it
    then has every region the masked member has (without masks it would have the image only, and
    the ensemble's sum would lose its masked regions)."""
    ae, rd, normals = members
    added = Detector.from_state(ae.state(), "ae")
    added.calibration = {}
    calibrate_on(added, _films(normals[:12]), [_masks(64)] * 12)
    assert set(added.calibration) == set(ae.calibration) and {"lungs", "heart", "anatomy"} <= set(added.calibration)
    joined = added_member(Detector.from_state(ae.state(), "ae"), rd, _films(normals[:12]), [_masks(64)] * 12)
    assert joined.scoring == rd.scoring and joined.scoring is not rd.scoring
    unmasked = Detector.from_state(ae.state(), "ae")
    calibrate_on(unmasked, _films(normals[:12]), [None] * 12)
    assert set(unmasked.calibration) == {"image"}


def test_save_load_reproduces_scores_and_maps_exactly(members, tmp_path):
    ae, rd, normals = members
    ens = EnsembleDetector([ae, rd], whole_image=[False, True])
    ens.calibrate_radiographs(_films(normals[:12]), [_masks(64)] * 12)
    back = Detector.load(ens.save(tmp_path / "ens.pt"))
    assert isinstance(back, EnsembleDetector) and back.whole_image == [False, True]
    test = _films(normals[12:16])
    a, b = ens.score(test, keep_maps=True), back.score(test, keep_maps=True)
    assert [x.score for x in a] == [x.score for x in b]
    assert all(np.array_equal(x.heatmap, y.heatmap) and x.heatmap.shape == (64, 64) for x, y in zip(a, b))


def test_recalibration_from_model_frame_images_recalibrates_members_and_sum(members):
    ae, rd, normals = members
    ens = EnsembleDetector([ae, rd], whole_image=[False, True])
    before = dict(ae.calibration["image"])
    ens.calibrate(normals[12:24], target_fpr=0.1)  # 64 px frame: the larger member's
    assert ens.scoring.target_fpr == 0.1 and ae.scoring.target_fpr == 0.1
    assert ae.calibration["image"]["raw"] != before["raw"] and set(ens.calibration) == {"image"}


def test_set_target_fpr_moves_every_threshold_without_rescoring(members):
    """Members' and sum's thresholds move to what calibrating at the new target would give, from the
    kept held-out scores; normalisations stay (``tools/rethreshold.py``)."""
    ae, rd, normals = members
    ens = EnsembleDetector([Detector.from_state(ae.state(), "ae"), Detector.from_state(rd.state(), "rd")],
                           whole_image=[False, True])
    films = _films(normals[:12])
    ens.calibrate_radiographs(films)
    fitted = {k: dict(c) for k, c in ens.calibration.items()}
    ens.set_target_fpr(0.3)
    assert ens.scoring.target_fpr == 0.3 and all(m.scoring.target_fpr == 0.3 for m in ens.members)
    for k, c in ens.calibration.items():
        assert c["center"] == fitted[k]["center"] and c["scale"] == fitted[k]["scale"]
    again = EnsembleDetector(ens.members, whole_image=[False, True])
    again.scoring.target_fpr = 0.3
    again.calibrate_radiographs(films)
    assert ens.calibration["image"]["threshold"] == pytest.approx(again.calibration["image"]["threshold"])
    assert ens.calibration["image"]["threshold"] < fitted["image"]["threshold"]


def test_commands_take_an_ensemble_and_export_refuses_it(members, tmp_path):
    from anatomix.anomaly.run import score
    from anatomix.cli.anomaly import anomaly
    from anatomix.export import load_spec

    ae, rd, normals = members
    ens = EnsembleDetector([ae, rd], whole_image=[False, True])
    ens.calibrate_radiographs(_films(normals[:12]))
    path = ens.save(tmp_path / "ens.pt")
    folder = tmp_path / "films"
    folder.mkdir()
    for i, x in enumerate(normals[12:16]):
        Image.fromarray((x * 255).astype(np.uint8)).save(folder / f"n{i}.png")
    r = CliRunner().invoke(anomaly, ["score", str(folder), "--detector", str(path), "-o", str(tmp_path / "s.csv"),
                                     "--maps", str(tmp_path / "maps")])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "maps").glob("*_anomaly.png"))) == 4
    assert len(score([folder], tmp_path / "s2.csv", detector=path).results) == 4
    for i, x in enumerate(normals[:12]):
        Image.fromarray((x * 255).astype(np.uint8)).save(folder / f"c{i}.png")
    r = CliRunner().invoke(anomaly, ["calibrate", str(folder), "--detector", str(path), "-o", str(tmp_path / "l.pt")])
    assert r.exit_code == 0, r.output
    assert isinstance(Detector.load(tmp_path / "l.pt"), EnsembleDetector)
    with pytest.raises(UsageError, match="ensemble"):
        load_spec(str(path))


def test_an_ensemble_needs_two_members(members):
    with pytest.raises(UsageError, match="two"):
        EnsembleDetector([members[0]])


def test_student_detector_keeps_one_trained_student_of_rd():
    from anatomix.anomaly.ensemble import student_detector

    normals = normal_images(16, 32, seed=4)
    rd = fit_detector(normals, "rd", 32, epochs=1, batch_size=8, progress=False,
                      model_config={"channels": [4, 8, 8, 16], "teacher_epochs": 1, "students": ["reverse", "forward"]},
                      scoring=ScoringConfig(residual="auto", reduce="topk"))
    fwd = student_detector(rd, "forward")
    assert fwd.model.config["students"] == ["forward"] and fwd.scoring.primary == "image" and not fwd.calibration
    kept, original = fwd.model.students[0].state_dict(), rd.model.students[1].state_dict()
    assert all(np.array_equal(kept[k].numpy(), original[k].numpy()) for k in original)
    with pytest.raises(UsageError, match="no 'other' student"):
        student_detector(rd, "other")
