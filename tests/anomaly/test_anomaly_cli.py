"""``anatomix anomaly fit / score / evaluate`` end to end on tiny synthetic PNGs."""

import csv
import json

import numpy as np
from anomaly_synth import normal_images, with_blob
from click.testing import CliRunner
from PIL import Image

from anatomix.cli.anomaly import anomaly


def _write(folder, imgs, prefix, shape=(60, 50)):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(imgs):
        p = folder / f"{prefix}{i:02d}.png"
        Image.fromarray((im * 255).astype(np.uint8)).resize(shape[::-1]).save(p)
        paths.append(p)
    return paths


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fit_score_evaluate(tmp_path):
    _write(tmp_path / "normals", normal_images(24, 48, seed=1), "n")
    (tmp_path / "normals" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    det = tmp_path / "det.pt"
    r = CliRunner().invoke(anomaly, ["fit", str(tmp_path / "normals"), "-o", str(det), "--method", "ae",
                                     "--epochs", "2", "--image-size", "32", "--calib-fraction", "0.25",
                                     "--critic-epochs", "2", "--threads", "1"])
    assert r.exit_code == 1, r.output  # one unreadable file -> reported, status 1, detector written
    assert det.is_file() and not det.with_name("det.pt.ckpt").exists()
    assert not det.with_name("det.pt.critic.ckpt").exists()
    errs = _rows(tmp_path / "errors.csv")
    assert [e["path"].endswith("broken.png") for e in errs] == [True]

    test_imgs = normal_images(6, 48, seed=7)
    tests = _write(tmp_path / "test", [*test_imgs[:3], *[with_blob(x) for x in test_imgs[3:]]], "t", (64, 40))
    mdir = tmp_path / "masks"
    mdir.mkdir()
    for p in tests[:2]:  # masks for two images only, 0/255 as `anatomix segment` writes
        m = np.zeros((64, 40), np.uint8)
        m[10:50, 4:18] = 255
        Image.fromarray(m).save(mdir / f"{p.stem}_lungR.png")
        Image.fromarray(m[:, ::-1]).save(mdir / f"{p.stem}_lungL.png")
    out = tmp_path / "out" / "scores.csv"
    r = CliRunner().invoke(anomaly, ["score", str(tmp_path / "test"), str(tmp_path / "missing.png"),
                                     "--detector", str(det), "-o", str(out), "--maps", str(tmp_path / "maps"),
                                     "--masks", str(mdir)])
    assert r.exit_code == 1, r.output
    rows = _rows(out)
    assert [x["image_id"] for x in rows] == [p.stem for p in tests]
    assert {"image_id", "path", "score", "anomalous", "score_lungs", "score_lungR", "score_heart"} <= set(rows[0])
    assert all(x["anomalous"] in ("0", "1") for x in rows)
    # fit had no masks: masked regions are not calibrated, the score falls back to the whole image
    assert {x["score_region"] for x in rows} == {"image"} and rows[0]["raw_lungs"] != "" and rows[3]["raw_lungs"] == ""
    assert Image.open(tmp_path / "maps" / f"{tests[0].stem}_anomaly.png").size == (40, 64)
    assert "missing.png" in (out.parent / "errors.csv").read_text()

    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"{p.stem},{'normal' if i < 3 else 'abnormal'}\n"
                                             for i, p in enumerate(tests)))
    r = CliRunner().invoke(anomaly, ["evaluate", str(out), "--labels", str(labels), "-o", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert 0.0 <= res["score"]["auroc"] <= 1.0 and res["score"]["n_abnormal"] == 3
    assert (tmp_path / "ev" / "roc.png").is_file()

    # whole-image mode ignores masks; same scores as before for the images without masks
    out2 = tmp_path / "scores2.csv"
    r = CliRunner().invoke(anomaly, ["score", *map(str, tests), "--detector", str(det), "-o", str(out2),
                                     "--masks", str(mdir), "--no-mask"])
    assert r.exit_code == 0, r.output
    rows2 = _rows(out2)
    assert [a["score"] for a in rows2] == [b["score"] for b in rows] and rows2[0]["raw_lungs"] == ""


def test_bad_detector_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("nope")
    img = _write(tmp_path / "i", normal_images(1, 48), "x")[0]
    r = CliRunner().invoke(anomaly, ["score", str(img), "--detector", str(bad), "-o", str(tmp_path / "s.csv")])
    assert r.exit_code == 2 and "bad.pt" in r.output


def test_bundled_detector_scores_out_of_the_box(tmp_path):
    from anatomix.models import REGISTRY

    assert REGISTRY.get("anomaly").available, "the bundled detector ships with the package"
    img = _write(tmp_path / "i", normal_images(2, 48), "x", (300, 240))
    out = tmp_path / "s.csv"
    r = CliRunner().invoke(anomaly, ["score", *map(str, img), "-o", str(out), "--maps", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    rows = _rows(out)
    # the default ensemble needs lung masks (its zones member): it segments the films by itself; its
    # members are whole-image members (zones reads inside the lungs), so the sum is the image's score
    assert len(rows) == 2 and rows[0]["score_region"] == "image" and rows[0]["mask_source"] == "given"
    assert rows[0]["anomalous"] in ("0", "1")
    assert Image.open(tmp_path / "m" / "x00_anomaly.png").size == (240, 300)


def test_calibrate_moves_the_threshold_not_the_ranking(tmp_path):
    """Normals of a 'new site' (a noisier detector) score higher; recalibrating on some of them brings
    the flag rate on the others back near the target, with the same image ranking."""
    _write(tmp_path / "normals", normal_images(30, 48, seed=1), "n")
    det = tmp_path / "det.pt"
    r = CliRunner().invoke(anomaly, ["fit", str(tmp_path / "normals"), "-o", str(det), "--epochs", "3",
                                     "--image-size", "32", "--critic-epochs", "3", "--threads", "1"])
    assert r.exit_code == 0, r.output
    noise = np.random.default_rng(3).normal(0, 0.04, (80, 48, 48))
    site = np.clip(normal_images(80, 48, seed=21) + noise, 0, 1)
    _write(tmp_path / "site_cal", site[:40], "c")
    fresh = _write(tmp_path / "site_new", site[40:], "f")
    new = tmp_path / "site.pt"
    r = CliRunner().invoke(anomaly, ["calibrate", str(tmp_path / "site_cal"), "--detector", str(det), "-o", str(new),
                                     "--target-fpr", "0.1", "--threads", "1"])
    assert r.exit_code == 0, r.output and "recalibrated on 40 normals" in r.output
    before, after = tmp_path / "before.csv", tmp_path / "after.csv"
    for d, out in ((det, before), (new, after)):
        r = CliRunner().invoke(anomaly, ["score", *map(str, fresh), "--detector", str(d), "-o", str(out)])
        assert r.exit_code == 0, r.output
    b, a = _rows(before), _rows(after)
    flag_b = np.mean([int(x["anomalous"]) for x in b])
    flag_a = np.mean([int(x["anomalous"]) for x in a])
    assert flag_b > 0.5  # the shifted site trips the original threshold
    r = CliRunner().invoke(anomaly, ["score", *map(str, fresh), "--detector", str(det), "-o", str(before)])
    assert "recalibrate on local normals" in r.output  # ... and the command says what to do about it
    assert flag_a <= 0.3  # target 10 % on 40 fresh images: binomial tolerance
    assert [x["raw_image"] for x in a] == [x["raw_image"] for x in b]  # same map, same ranking
    sb, sa = np.array([float(x["score"]) for x in b]), np.array([float(x["score"]) for x in a])
    assert np.array_equal(np.argsort(sb), np.argsort(sa))


def test_critic_only_when_the_residual_uses_it(tmp_path):
    from anatomix.anomaly.detector import Detector

    _write(tmp_path / "normals", normal_images(12, 48, seed=1), "n")
    for residual, has_critic in (("ssim", False), ("critic", True)):
        det = tmp_path / f"{residual}.pt"
        r = CliRunner().invoke(anomaly, ["fit", str(tmp_path / "normals"), "-o", str(det), "--epochs", "1",
                                         "--image-size", "32", "--residual", residual, "--threads", "1",
                                         *(["--critic-epochs", "1"] if has_critic else [])])
        assert r.exit_code == 0, r.output
        d = Detector.load(det)
        assert (d.critic is not None) == has_critic and d.meta["critic_epochs"] == int(has_critic)


def test_every_residual_the_cli_offers_is_one_the_detector_knows():
    from anatomix.anomaly.scoring import is_residual
    from anatomix.cli.anomaly import fit

    choices = next(p.type.choices for p in fit.params if p.name == "residual")
    assert choices and all(is_residual(c) for c in choices)
