"""Writers: atomic writes, mask PNG/NIfTI round trips, landmark JSON, overlays."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from anatomix.anatomy import FULL, LUNGS_HEART
from anatomix.io import (
    STRUCTURE_COLOURS,
    Radiograph,
    atomic_write,
    read_radiograph,
    write_landmarks_json,
    write_mask_nifti,
    write_mask_png,
    write_overlay,
)

H, W = 40, 56


def asym_mask() -> np.ndarray:
    """An (H, W) bool mask with no symmetry: an L shape near the top left plus a dot."""
    m = np.zeros((H, W), bool)
    m[3:20, 4:9] = True
    m[15:20, 4:30] = True
    m[30, 50] = True
    return m


# -- atomic_write ------------------------------------------------------------------------------
def test_atomic_write_replaces_on_success_and_creates_parents(tmp_path):
    dest = tmp_path / "a" / "b" / "out.txt"
    with atomic_write(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.name.startswith(".out.txt.tmp-")
        tmp.write_text("new")
        assert not dest.exists()
    assert dest.read_text() == "new"
    assert [p.name for p in dest.parent.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("existing", [None, "old"])
def test_atomic_write_leaves_nothing_on_error(tmp_path, existing):
    dest = tmp_path / "out.txt"
    if existing is not None:
        dest.write_text(existing)
    with pytest.raises(RuntimeError), atomic_write(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if existing is None else ["out.txt"])
    if existing is not None:
        assert dest.read_text() == existing


# -- masks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int64, np.float32])
def test_mask_png_round_trip(tmp_path, dtype):
    mask = asym_mask()
    write_mask_png(tmp_path / "m.png", mask.astype(dtype))
    im = Image.open(tmp_path / "m.png")
    assert im.mode == "L"
    stored = np.asarray(im)
    assert set(np.unique(stored)) == {0, 255}
    np.testing.assert_array_equal(stored == 255, mask)


@pytest.mark.parametrize("bad", [np.full((H, W), 0.5), np.zeros((2, H, W)), np.full((H, W), 2)])
def test_mask_writers_reject_non_binary_or_non_2d(tmp_path, bad):
    with pytest.raises(ValueError):
        write_mask_png(tmp_path / "m.png", bad)
    with pytest.raises(ValueError):
        write_mask_nifti(tmp_path / "m.nii", bad)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_mask_nifti_without_nifti_input_reads_back_in_the_same_orientation(tmp_path, suffix):
    mask = asym_mask()
    like = Radiograph(pixels=np.zeros((H, W), np.float32), spacing=(0.7, 0.4))
    write_mask_nifti(tmp_path / f"m{suffix}", mask, like=like)
    back = read_radiograph(tmp_path / f"m{suffix}")
    np.testing.assert_array_equal(back.pixels > 0, mask)
    assert back.spacing == pytest.approx((0.7, 0.4))
    img = nib.load(tmp_path / f"m{suffix}")
    assert img.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(img.dataobj))) == {0, 1}


# affines and array shapes of NIfTI inputs: (name, shape, affine)
NIFTI_LAYOUTS = [
    ("itk-2d", (W, H), np.diag([-0.5, -0.5, 1.0, 1.0])),
    ("identity-2d", (W, H), np.eye(4)),
    ("coronal-3d", (W, 1, H), np.diag([0.3, 1.0, 0.3, 1.0])),
    ("permuted-flipped-3d", (H, W, 1),
     np.array([[0, -0.4, 0, 10], [0, 0, 2.0, -5], [-0.6, 0, 0, 3], [0, 0, 0, 1]], dtype=float)),
    ("singleton-first", (1, H, W),
     np.array([[0, 0, 0.5, 0], [1.0, 0, 0, 0], [0, -0.5, 0, 0], [0, 0, 0, 1]], dtype=float)),
]


@pytest.mark.parametrize("shape, affine", [l[1:] for l in NIFTI_LAYOUTS], ids=[l[0] for l in NIFTI_LAYOUTS])
def test_mask_nifti_overlays_the_nifti_input_voxel_for_voxel(tmp_path, shape, affine):
    data = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "in.nii.gz")
    rad = read_radiograph(tmp_path / "in.nii.gz")
    assert min(rad.shape) == min(H, W) and max(rad.shape) == max(H, W)
    write_mask_nifti(tmp_path / "mask.nii.gz", rad.pixels > 0.5, like=rad)
    out = nib.load(tmp_path / "mask.nii.gz")
    assert out.shape == data.shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out.dataobj), (data / 255.0 > 0.5).astype(np.uint8))
    # and the mask read back lines up with the image read back
    np.testing.assert_array_equal(read_radiograph(tmp_path / "mask.nii.gz").pixels > 0, rad.pixels > 0.5)


def test_mask_nifti_rejects_wrong_suffix_and_shape(tmp_path):
    with pytest.raises(ValueError, match=".nii"):
        write_mask_nifti(tmp_path / "m.png", asym_mask())
    nib.save(nib.Nifti1Image(np.zeros((W, H), np.uint8), np.eye(4)), tmp_path / "in.nii")
    rad = read_radiograph(tmp_path / "in.nii")
    with pytest.raises(ValueError, match="does not fit"):
        write_mask_nifti(tmp_path / "m.nii", np.zeros((H + 1, W), bool), like=rad)


# -- landmarks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("template", [LUNGS_HEART, FULL], ids=["lungs_heart", "full"])
def test_landmarks_json(tmp_path, template):
    pts = np.random.default_rng(0).uniform(0, 500, (template.n_nodes, 2))
    write_landmarks_json(tmp_path / "l.json", pts, template=template, image_shape=(512, 480))
    doc = json.loads((tmp_path / "l.json").read_text())
    assert doc["frame"] == "original" and (doc["height"], doc["width"]) == (512, 480)
    assert list(doc["structures"]) == list(template.keys)
    for key, sl in template.slices().items():
        np.testing.assert_array_equal(np.array(doc["structures"][key]), pts[sl])


def test_landmarks_json_model_frame_without_shape(tmp_path):
    write_landmarks_json(tmp_path / "l.json", np.zeros((120, 2)), frame="model")
    doc = json.loads((tmp_path / "l.json").read_text())
    assert doc["frame"] == "model" and doc["height"] is None and doc["width"] is None


@pytest.mark.parametrize("points, kwargs", [
    (np.zeros((119, 2)), {}),
    (np.zeros((120, 3)), {}),
    (np.full((120, 2), np.nan), {}),
    (np.zeros((120, 2)), {"frame": "pixels"}),
], ids=["wrong-count", "wrong-dim", "nan", "bad-frame"])
def test_landmarks_json_rejects_bad_input(tmp_path, points, kwargs):
    with pytest.raises(ValueError):
        write_landmarks_json(tmp_path / "l.json", points, **kwargs)
    assert not any(tmp_path.iterdir())


# -- overlay -----------------------------------------------------------------------------------
def _square(cx: float, cy: float, r: float) -> np.ndarray:
    return np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]])


@pytest.mark.parametrize("shape, expected", [((300, 200), (200, 300)), ((3000, 2000), (683, 1024)),
                                             ((1000, 4000), (1024, 256))])
def test_overlay_size_and_colours(tmp_path, shape, expected):
    h, w = shape
    pixels = np.full(shape, 0.5, np.float32)
    heart = np.zeros(shape, bool)
    heart[h // 2 : h // 2 + h // 4, w // 4 : w // 2] = True
    contours = {"lungR": _square(w * 0.25, h * 0.3, min(h, w) * 0.1),
                "lungL": _square(w * 0.75, h * 0.3, min(h, w) * 0.1)}
    write_overlay(tmp_path / "o.png", pixels, contours=contours, masks={"heart": heart})
    im = Image.open(tmp_path / "o.png")
    assert im.mode == "RGB" and im.size == expected
    colours = {tuple(c) for c in np.asarray(im).reshape(-1, 3)}
    assert {STRUCTURE_COLOURS[k] for k in ("lungR", "lungL", "heart")} <= colours
    assert (128, 128, 128) in colours


def test_overlay_contour_lands_where_it_should(tmp_path):
    pixels = np.zeros((100, 100), np.float32)
    write_overlay(tmp_path / "o.png", pixels, contours={"heart": _square(50, 50, 20)})
    rgb = np.asarray(Image.open(tmp_path / "o.png"))
    hit = np.all(rgb == STRUCTURE_COLOURS["heart"], axis=2)
    rows, cols = np.nonzero(hit)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (29, 69, 29, 69)
    assert not hit[50, 50]


def test_overlay_without_annotations_is_the_grey_image(tmp_path):
    pixels = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (32, 1))
    write_overlay(tmp_path / "o.png", pixels)
    rgb = np.asarray(Image.open(tmp_path / "o.png")).astype(int)
    np.testing.assert_array_equal(rgb[..., 0], np.round(pixels * 255))
    assert (rgb[..., 0] == rgb[..., 2]).all()
