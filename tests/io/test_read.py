"""read_radiograph over every supported format, on synthetic files made in tmp_path."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_synth import write_dicom
from PIL import Image, PngImagePlugin
from pydicom.uid import RLELossless

from anatomix.io import read_radiograph

H, W = 40, 56  # not square, so transposes show


def ramp(dtype=np.uint8, top: int = 255) -> np.ndarray:
    """An asymmetric (H, W) test image: a diagonal ramp with a bright block near the top left."""
    r, c = np.mgrid[0:H, 0:W]
    img = (r * 3 + c) / (3 * (H - 1) + (W - 1))
    img[2:8, 3:12] = 1.0
    return np.round(img * top).astype(dtype)


def levels(top: int) -> np.ndarray:
    """(64, 64) uint16 image holding 4096 distinct values evenly spread over [0, top]."""
    return np.round(np.linspace(0, top, 64 * 64)).astype(np.uint16).reshape(64, 64)


# -- PNG / JPEG / TIFF -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P"])
def test_png_8bit_modes_read_as_the_same_gray(tmp_path, mode):
    img = ramp()
    if mode == "P":
        im = Image.fromarray(255 - img).convert("P")
        im.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    else:
        im = Image.fromarray(img).convert(mode)
    im.save(tmp_path / "a.png")
    rad = read_radiograph(tmp_path / "a.png")
    assert rad.pixels.dtype == np.float32 and rad.shape == (H, W)
    np.testing.assert_allclose(rad.pixels, img / 255.0, atol=1e-6)
    assert rad.meta["mode"] == mode and rad.meta["format"] == "png" and rad.meta["bit_depth"] == 8
    assert rad.meta["photometric"] == {"P": "PALETTE COLOR", "RGB": "RGB", "RGBA": "RGB"}.get(mode, "MONOCHROME2")


def test_png_colour_becomes_luminance(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, : W // 2, 0] = 255  # red half
    rgb[:, W // 2 :, 2] = 255  # blue half
    Image.fromarray(rgb).save(tmp_path / "c.png")
    px = read_radiograph(tmp_path / "c.png").pixels
    np.testing.assert_allclose(px[:, : W // 2], 0.299, atol=1e-6)
    np.testing.assert_allclose(px[:, W // 2 :], 0.114, atol=1e-6)


def test_png_bilevel(tmp_path):
    img = ramp() > 128
    Image.fromarray(img).save(tmp_path / "b.png")
    rad = read_radiograph(tmp_path / "b.png")
    assert rad.meta["mode"] == "1"
    np.testing.assert_array_equal(rad.pixels, img.astype(np.float32))


def test_png_16bit_keeps_full_dynamic_range(tmp_path):
    img = levels(65535)
    Image.fromarray(img).save(tmp_path / "a16.png")
    rad = read_radiograph(tmp_path / "a16.png")
    assert rad.meta["mode"].startswith("I;16") and rad.meta["bit_depth"] == 16
    np.testing.assert_allclose(rad.pixels, img / 65535.0, rtol=1e-6)
    assert len(np.unique(rad.pixels)) == 4096


def test_png_16bit_with_sbit_12_scales_by_12_bits(tmp_path):
    img = levels(4095)
    info = PngImagePlugin.PngInfo()
    info.add(b"sBIT", bytes([12]))
    Image.fromarray(img).save(tmp_path / "a12.png", pnginfo=info)
    rad = read_radiograph(tmp_path / "a12.png")
    assert rad.meta["bit_depth"] == 12
    assert rad.pixels.max() == 1.0
    np.testing.assert_allclose(rad.pixels, img / 4095.0, rtol=1e-6)
    assert len(np.unique(rad.pixels)) == 4096


def test_tiff_16bit(tmp_path):
    img = ramp(np.uint16, 65535)
    Image.fromarray(img).save(tmp_path / "a.tif")
    rad = read_radiograph(tmp_path / "a.tif")
    assert rad.meta["format"] == "tiff"
    np.testing.assert_allclose(rad.pixels, img / 65535.0, rtol=1e-6)


@pytest.mark.parametrize("dtype, mode, suffix", [(np.float32, "F", ".tiff"), (np.int32, "I", ".TIF")])
def test_tiff_float_and_int32_are_min_max_scaled(tmp_path, dtype, mode, suffix):
    img = ramp().astype(dtype) * 3 - 100
    Image.fromarray(img).save(tmp_path / f"f{suffix}")
    rad = read_radiograph(tmp_path / f"f{suffix}")
    assert rad.meta["mode"] == mode and rad.meta["bit_depth"] == 32
    np.testing.assert_allclose(rad.pixels, (img - img.min()) / np.ptp(img), atol=1e-6)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_jpeg_within_compression_error(tmp_path, suffix):
    img = ramp()
    Image.fromarray(img).save(tmp_path / f"a{suffix}", quality=95)
    rad = read_radiograph(tmp_path / f"a{suffix}")
    assert rad.meta["format"] == "jpeg"
    assert np.abs(rad.pixels - img / 255.0).mean() < 0.01


def test_large_image_is_not_a_decompression_bomb(tmp_path):
    Image.new("L", (6000, 4800), 7).save(tmp_path / "big.png", compress_level=1)
    saved = Image.MAX_IMAGE_PIXELS
    rad = read_radiograph(tmp_path / "big.png")
    assert rad.shape == (4800, 6000)
    assert Image.MAX_IMAGE_PIXELS == saved  # Pillow's global limit is left as it was


# -- DICOM -------------------------------------------------------------------------------------
def test_dicom_monochrome1_and_2_give_the_same_pixels(tmp_path):
    img = ramp(np.uint16, 4095)
    m2 = read_radiograph(write_dicom(tmp_path / "m2.dcm", img, "MONOCHROME2"))
    m1 = read_radiograph(write_dicom(tmp_path / "m1.dcm", 4095 - img, "MONOCHROME1"))
    np.testing.assert_allclose(m2.pixels, img / 4095.0, rtol=1e-6)  # BitsStored 12, not 16
    np.testing.assert_allclose(m1.pixels, m2.pixels, atol=1e-6)
    assert m1.meta["photometric"] == "MONOCHROME1" and m1.meta["bit_depth"] == 12
    assert m2.meta["format"] == "dicom" and m2.meta["lut_applied"] is False


@pytest.mark.parametrize("slope, intercept", [(2.0, -1024.0), (-1.0, 4095.0)])
def test_dicom_rescale_slope_intercept(tmp_path, slope, intercept):
    img = ramp(np.uint16, 4095)
    rad = read_radiograph(write_dicom(tmp_path / "r.dcm", img, RescaleSlope=slope,
                                     RescaleIntercept=intercept))
    values = img * slope + intercept
    np.testing.assert_allclose(rad.pixels, (values - values.min()) / np.ptp(values), atol=1e-6)
    assert rad.meta["lut_applied"] is True


def test_dicom_window_clips_outside_and_is_linear_inside(tmp_path):
    img = ramp(np.uint16, 4095)
    center, width = 2000, 1001  # DICOM LINEAR: (v - 1999.5) / 1000 + 0.5, clipped to [0, 1]
    rad = read_radiograph(write_dicom(tmp_path / "w.dcm", img, WindowCenter=center,
                                     WindowWidth=width))
    px = rad.pixels
    assert np.all(px[img < 1500] == 0.0) and np.all(px[img >= 2500] == 1.0)
    inside = (img >= 1500) & (img < 2500)
    assert inside.sum() > 100
    expected = (img[inside] - (center - 0.5)) / (width - 1) + 0.5
    np.testing.assert_allclose(px[inside], expected, atol=1e-5)


@pytest.mark.parametrize("key", ["PixelSpacing", "ImagerPixelSpacing"])
def test_dicom_spacing(tmp_path, key):
    rad = read_radiograph(write_dicom(tmp_path / "s.dcm", ramp(np.uint16), **{key: [0.143, 0.15]}))
    assert rad.spacing == pytest.approx((0.143, 0.15))


@pytest.mark.parametrize("name", ["x.dicom", "IM0001", "1.2.840.113619.320"])
def test_dicom_by_suffix_or_by_dicm_marker(tmp_path, name):
    img = ramp(np.uint16, 4095)
    rad = read_radiograph(write_dicom(tmp_path / name, img))
    np.testing.assert_allclose(rad.pixels, img / 4095.0, rtol=1e-6)


def test_dicom_rle_compressed_decodes(tmp_path):
    img = ramp(np.uint16, 4095)
    path = write_dicom(tmp_path / "rle.dcm", img)
    import pydicom

    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path)
    rad = read_radiograph(path)
    assert rad.meta["transfer_syntax"] == RLELossless
    np.testing.assert_allclose(rad.pixels, img / 4095.0, rtol=1e-6)


# -- NIfTI -------------------------------------------------------------------------------------
def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_nifti_itk_style_2d_reads_like_the_png(tmp_path):
    img = ramp()
    affine = np.diag([-0.5, -0.7, 1.0, 1.0])  # ITK 2D: LPS identity, array [x, y]
    rad = read_radiograph(_save_nifti(tmp_path / "itk.nii.gz", img.T, affine))
    np.testing.assert_allclose(rad.pixels, img / 255.0, atol=1e-6)
    assert rad.spacing == pytest.approx((0.7, 0.5))
    np.testing.assert_allclose(rad.affine, affine, rtol=1e-6)
    assert rad.meta["nifti_shape"] == (W, H) and rad.image_id == "itk"


def test_nifti_ras_identity_2d_is_flipped_to_display(tmp_path):
    data = ramp().T  # [x, y], identity affine: index 0 is the patient's left and inferior side
    rad = read_radiograph(_save_nifti(tmp_path / "ras.nii", data, np.eye(4)))
    np.testing.assert_allclose(rad.pixels, data[::-1, ::-1].T / 255.0, atol=1e-6)


def test_nifti_coronal_3d_singleton_puts_superior_up_and_patient_right_left(tmp_path):
    img = ramp()
    data = np.zeros((W, 1, H), np.uint8)  # axes R-L (x), A-P (y, singleton), S-I (z)
    data[:, 0, :] = img[::-1, ::-1].T  # so row 0 = highest z, column 0 = highest x (patient right)
    rad = read_radiograph(_save_nifti(tmp_path / "cor.nii.gz", data, np.diag([0.2, 1.0, 0.3, 1.0])))
    np.testing.assert_allclose(rad.pixels, img / 255.0, atol=1e-6)
    assert rad.spacing == pytest.approx((0.3, 0.2))


def test_nifti_scaled_float_is_min_max(tmp_path):
    img = ramp(np.int16, 1000) - 500
    image = nib.Nifti1Image(img.T, np.diag([-1.0, -1.0, 1.0, 1.0]))
    image.header.set_slope_inter(2.0, 10.0)
    nib.save(image, tmp_path / "f.nii")
    rad = read_radiograph(tmp_path / "f.nii")
    np.testing.assert_allclose(rad.pixels, (img - img.min()) / np.ptp(img), atol=1e-6)


# -- NumPy -------------------------------------------------------------------------------------
@pytest.mark.parametrize("img, top", [(ramp(), 255), (ramp(np.uint16, 65535), 65535),
                                      (ramp() > 100, 1)], ids=["uint8", "uint16", "bool"])
def test_npy_integer_dtypes_scale_by_dtype_range(tmp_path, img, top):
    np.save(tmp_path / "a.npy", img)
    rad = read_radiograph(tmp_path / "a.npy")
    np.testing.assert_allclose(rad.pixels, img.astype(np.float64) / top, rtol=1e-6)


@pytest.mark.parametrize("layout", ["(1,H,W)", "(H,W,1)", "(H,W,3)", "(H,W,4)"])
def test_npy_layouts(tmp_path, layout):
    img = ramp()
    arr = {"(1,H,W)": img[None], "(H,W,1)": img[..., None],
           "(H,W,3)": np.repeat(img[..., None], 3, axis=2),
           "(H,W,4)": np.concatenate([np.repeat(img[..., None], 3, axis=2),
                                      np.full((H, W, 1), 9, np.uint8)], axis=2)}[layout]
    np.save(tmp_path / "a.npy", arr)
    np.testing.assert_allclose(read_radiograph(tmp_path / "a.npy").pixels, img / 255.0, atol=1e-6)


def test_npy_float_min_max_and_constant_is_zero(tmp_path):
    img = ramp().astype(np.float64) * 0.01 + 5.0
    np.save(tmp_path / "f.npy", img)
    np.save(tmp_path / "c.npy", np.full((H, W), 3.5))
    np.testing.assert_allclose(read_radiograph(tmp_path / "f.npy").pixels,
                               (img - img.min()) / np.ptp(img), atol=1e-6)
    const = read_radiograph(tmp_path / "c.npy").pixels
    assert const.shape == (H, W) and not const.any()


# -- real data -------------------------------------------------------------------------------
def test_reads_a_jsrt_png_with_dark_lungs(data_root):
    with open(data_root / "cxr-seg" / "manifest.csv") as f:
        case = next(row["id"] for row in csv.DictReader(f) if row["source"] == "jsrt")
    folder = data_root / "cxr-seg" / "jsrt"
    rad = read_radiograph(folder / f"{case}.png")
    assert rad.shape == (512, 512) and rad.pixels.dtype == np.float32
    assert rad.meta["format"] == "png" and rad.meta["bit_depth"] == 8
    assert 0.0 <= rad.pixels.min() and rad.pixels.max() <= 1.0
    lungs = np.asarray(Image.open(folder / f"{case}_lungR.png")) > 0
    heart = np.asarray(Image.open(folder / f"{case}_heart.png")) > 0
    assert rad.pixels[lungs].mean() < rad.pixels[heart].mean()  # standard polarity: air is dark


def test_bundled_examples_read(tmp_path):
    folder = Path(__file__).resolve().parents[2] / "examples" / "images"
    images = sorted(folder.glob("*.png"))
    assert len(images) == 4
    for path in images:
        assert read_radiograph(path).shape == (128, 128)
