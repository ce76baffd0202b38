"""Hostile inputs: read_radiograph raises exactly ReadError naming the file and the cause."""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_synth import write_dicom
from PIL import Image, ImageFile
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from anatomix.errors import ReadError
from anatomix.io import MIN_SIDE, read_radiograph

RNG = np.random.default_rng(7)


def _encoded(fmt: str, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, size[::-1], dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims width x height but holds a single empty IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name
    return make


def _save_image(name: str, size, **kwargs) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        Image.new("L", size, 100).save(tmp / name, **kwargs)
        return tmp / name
    return make


def _nifti(name: str, shape) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), np.eye(4)), tmp / name)
        return tmp / name
    return make


def _npy(name: str, arr: np.ndarray) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        np.save(tmp / name, arr, allow_pickle=True)
        return tmp / name
    return make


def _dangling(tmp: Path) -> Path:
    os.symlink(tmp / "gone.png", tmp / "link.png")
    return tmp / "link.png"


def _directory(tmp: Path) -> Path:
    (tmp / "x.png").mkdir()
    return tmp / "x.png"


PNG, JPEG = _encoded("PNG"), _encoded("JPEG")
GARBAGE = bytes(RNG.integers(0, 256, 4000, dtype=np.uint8))

# (id, factory making the file in tmp_path, text the cause must contain)
CASES = [
    ("missing", lambda t: t / "nothing.png", "no such file"),
    ("dangling-symlink", _dangling, "dangling symlink"),
    ("directory", _directory, "is a directory"),
    ("unsupported-suffix", _write("a.bmp", PNG), "unsupported file type '.bmp'"),
    ("no-suffix-not-dicom", _write("README", b"x" * 200), "unsupported file type"),
    *[(f"empty{s}", _write(f"e{s}", b""), "empty file") for s in (".png", ".jpg", ".dcm", ".nii", ".npy")],
    *[(f"garbage{s}", _write(f"g{s}", GARBAGE), "") for s in
      (".png", ".jpg", ".jpeg", ".tif", ".dcm", ".nii", ".nii.gz", ".npy")],
    ("text-as-png", _write("t.png", b"hello, I am not an image\n" * 10), "cannot identify"),
    ("dicom-garbage", _write("g.dcm", GARBAGE), "not a DICOM file"),
    *[(f"truncated-png-{f}", _write("t.png", PNG[: int(len(PNG) * f)]), "truncated") for f in (0.3, 0.9)],
    *[(f"truncated-jpeg-{f}", _write("t.jpg", JPEG[: int(len(JPEG) * f)]), "truncated") for f in (0.3, 0.9)],
    ("jpeg-without-eoi", _write("t.jpg", JPEG[:-2]), "truncated"),
    ("dicom-no-pixel-data", lambda t: write_dicom(t / "np.dcm"), "no pixel data"),
    ("dicom-short-pixel-data", lambda t: write_dicom(t / "short.dcm", pixel_data=bytes(100)), "cannot decode pixel data"),
    ("dicom-undecodable-jpeg2000",
     lambda t: write_dicom(t / "j2k.dcm", pixel_data=encapsulate([GARBAGE[:100]]), syntax=JPEG2000Lossless),
     "JPEG 2000"),
    ("dicom-multiframe",
     lambda t: write_dicom(t / "mf.dcm", pixel_data=bytes(2 * 32 * 32 * 2), NumberOfFrames=2), "multi-frame"),
    ("nifti-3d-volume", _nifti("v.nii.gz", (20, 20, 20)), "3D volume with shape (20, 20, 20) is not a radiograph"),
    ("nifti-4d", _nifti("v4.nii", (20, 20, 1, 3)), "not a radiograph"),
    ("png-1x1", _save_image("one.png", (1, 1)), "image too small (1x1)"),
    ("png-thin", _save_image("thin.png", (200, MIN_SIDE - 1)), "image too small"),
    ("npy-tiny", _npy("tiny.npy", np.zeros((4, 4))), "image too small (4x4)"),
    ("npy-pickled-object", _npy("obj.npy", np.array([{"a": 1}], dtype=object)), ""),
    ("npy-3d-volume", _npy("vol.npy", np.zeros((20, 20, 20))), "not a 2D image"),
    ("npy-nan", _npy("nan.npy", np.full((20, 20), np.nan)), "NaN"),
    ("decompression-bomb", lambda t: _png_header_only(t / "bomb.png", 20000, 20000), "too large"),
]


@pytest.mark.parametrize("make, cause", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_raises_read_error(tmp_path, make, cause):
    path = make(tmp_path)
    with pytest.raises(ReadError) as info:
        read_radiograph(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    assert cause in message
    assert info.value.path == str(path)


def test_min_side_image_is_accepted(tmp_path):
    Image.new("L", (MIN_SIDE, MIN_SIDE), 50).save(tmp_path / "ok.png")
    assert read_radiograph(tmp_path / "ok.png").shape == (MIN_SIDE, MIN_SIDE)


def test_truncated_jpeg_is_caught_without_touching_pillow_globals(tmp_path):
    (tmp_path / "t.jpg").write_bytes(JPEG[: len(JPEG) // 2])
    with pytest.raises(ReadError):
        read_radiograph(tmp_path / "t.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
