"""anatomix.anomaly.run from Python: what the command line does, with the same bytes out."""

import numpy as np
import pytest
from anomaly_synth import normal_images, with_blob
from click.testing import CliRunner
from PIL import Image

from anatomix.anomaly import run
from anatomix.anomaly.detector import ScoringConfig
from anatomix.anomaly.train import fit_detector
from anatomix.cli.anomaly import anomaly
from anatomix.errors import UsageError


def _write(folder, imgs):
    folder.mkdir()
    for i, im in enumerate(imgs):
        Image.fromarray((im * 255).astype(np.uint8)).save(folder / f"t{i:02d}.png")


def test_score_from_python_matches_the_cli(tmp_path):
    det = fit_detector(normal_images(12, 32, seed=1), "ae", 32, epochs=1, batch_size=4, progress=False,
                       model_config={"channels": [8, 16], "latent": 8}, scoring=ScoringConfig(residual="l2"))
    det.save(tmp_path / "det.pt")
    imgs = normal_images(4, 32, seed=5)
    _write(tmp_path / "in", [*imgs[:2], *[with_blob(x) for x in imgs[2:]]])
    report = run.score([str(tmp_path / "in"), str(tmp_path / "gone.png")], tmp_path / "py" / "scores.csv",
                       detector=tmp_path / "det.pt", maps_dir=tmp_path / "maps", progress=False)
    assert [r.image_id for r in report.results] == ["t00", "t01", "t02", "t03"]
    assert [e.path.endswith("gone.png") for e in report.errors] == [True]
    assert report.errors_path == tmp_path / "py" / "errors.csv" and report.note is None
    assert (tmp_path / "maps" / "t03_anomaly.png").is_file()
    r = CliRunner().invoke(anomaly, ["score", str(tmp_path / "in"), str(tmp_path / "gone.png"), "--detector",
                                     str(tmp_path / "det.pt"), "-o", str(tmp_path / "cli" / "scores.csv")])
    assert r.exit_code == 1, r.output
    assert (tmp_path / "py" / "scores.csv").read_bytes() == (tmp_path / "cli" / "scores.csv").read_bytes()
    assert (tmp_path / "py" / "errors.csv").read_bytes() == (tmp_path / "cli" / "errors.csv").read_bytes()


def test_fit_needs_enough_normals_and_a_known_method(tmp_path):
    _write(tmp_path / "few", normal_images(3, 32))
    with pytest.raises(UsageError, match="at least 6 readable normal images, got 3"):
        run.fit([str(tmp_path / "few")], tmp_path / "det.pt", epochs=1)
    with pytest.raises(UsageError, match="unknown anomaly method 'nope'"):
        run.fit([str(tmp_path / "few")], tmp_path / "det.pt", method="nope")
    assert not (tmp_path / "det.pt").exists()


def test_site_mismatch_note():
    assert run.site_mismatch_note(19, 19, 0.05) is None  # too few images to judge
    assert run.site_mismatch_note(100, 25, 0.05) is None
    assert run.site_mismatch_note(100, 26, 0.05).startswith("26% flagged at a 5% FPR threshold")


def test_overlay_draws_heat_inside_the_masks_only():
    from anatomix.anomaly.scoring import overlay

    pixels = np.full((40, 60), 0.5, np.float32)
    heat = np.ones((40, 60), np.float32)  # hot everywhere
    lung = np.zeros((40, 60), bool)
    lung[10:30, 5:25] = True
    rgb = overlay(pixels, heat, {"lungR": lung, "heart": None}, vmax=1.0).astype(int)
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    assert grey[~lung].all()  # outside: the film as it is
    inner = lung.copy()
    inner[[10, 29], :] = inner[:, [5, 24]] = False
    assert (rgb[inner][:, 0] > rgb[inner][:, 2]).all()  # inside: coloured heat
    assert (rgb[10, 5:25] == (0, 255, 255)).all()  # the outline
    bare = overlay(pixels, heat, None, vmax=1.0).astype(int)
    assert (bare[..., 0] > bare[..., 2]).all()  # no masks: heat everywhere
