"""Resource guards: every reader checks the declared size against ``max_pixels`` before it
allocates, compressed data never inflate past what the declared image needs, and
``anatomix segment`` turns each bomb into one line of errors.csv in bounded memory."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_synth import write_dicom
from hostile_files import BOMBS, run_segment_measuring_peak
from PIL import Image
from pydicom.uid import DeflatedExplicitVRLittleEndian

from anatomix.errors import ReadError
from anatomix.io import read_radiograph
from anatomix.io.chexmask import read_chexmask_csv

SIDE = 40


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {name: build(folder / name) for name, build in BOMBS.items()}


def _write(path: Path, img: np.ndarray) -> Path:
    """``img`` (uint16 or uint8, (SIDE, SIDE)) in the format of ``path``'s suffix."""
    name = path.name
    if name.endswith((".png", ".tif", ".jpg")):
        Image.fromarray(img.astype(np.uint8)).save(path)
    elif name.endswith(".dcm"):
        write_dicom(path, img.astype(np.uint16))
    elif name.endswith((".nii", ".nii.gz")):
        nib.save(nib.Nifti1Image(img.astype(np.uint16), np.eye(4)), path)
    else:
        np.save(path, img)
    return path


@pytest.mark.parametrize("name", ["a.png", "a.tif", "a.jpg", "a.dcm", "a.nii", "a.nii.gz", "a.npy"])
def test_every_format_honours_max_pixels(tmp_path, name):
    path = _write(tmp_path / name, np.arange(SIDE * SIDE).reshape(SIDE, SIDE) % 251)
    assert read_radiograph(path, max_pixels=SIDE * SIDE).shape == (SIDE, SIDE)
    with pytest.raises(ReadError, match="too large") as err:
        read_radiograph(path, max_pixels=SIDE * SIDE - 1)
    assert err.value.path == str(path)


def test_bombs_are_refused_from_their_headers(bombs):
    causes = {"bomb.nii.gz": "NIfTI dims (32000, 32000)", "claims.dcm": "60000x60000",
              "rle_bomb.dcm": "RLE segment inflates past the declared 1024x1024 frame",
              "claims.npy": "shape (1000000, 1000000)"}
    for name, path in bombs.items():
        with pytest.raises(ReadError, match=r"^" + str(path)) as err:
            read_radiograph(path)
        assert causes[name] in err.value.cause


def test_nifti_gzip_is_inflated_only_as_far_as_the_image(tmp_path):
    """A small image followed by a long tail in the gzip stream reads without the tail
    (the stream is read to ``vox_offset`` + the declared data, no further)."""
    img = nib.Nifti1Image(np.arange(SIDE * SIDE, dtype=np.uint16).reshape(SIDE, SIDE), np.eye(4))
    with gzip.open(tmp_path / "tail.nii.gz", "wb") as f:
        f.write(img.to_bytes())
        f.write(b"\xff" * 5)  # a tail that a full inflate would read (and nibabel would not mind)
    raw = (tmp_path / "tail.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[:-8])  # the tail's gzip trailer cut off: never reached
    for name in ("tail.nii.gz", "cut.nii.gz"):
        assert read_radiograph(tmp_path / name).shape == (SIDE, SIDE)


def test_nifti_header_offset_is_bounded(tmp_path):
    img = nib.Nifti1Image(np.zeros((SIDE, SIDE), np.uint8), np.eye(4))
    img.header["vox_offset"] = 1e12
    (tmp_path / "far.nii").write_bytes(img.header.binaryblock + b"\0" * 4 + bytes(SIDE * SIDE))
    with pytest.raises(ReadError, match="vox_offset"):
        read_radiograph(tmp_path / "far.nii")


def test_deflated_dicom_bomb_is_refused_before_pydicom_inflates_it(tmp_path):
    path = write_dicom(tmp_path / "d.dcm", np.zeros((SIDE, SIDE), np.uint16), syntax=DeflatedExplicitVRLittleEndian,
                       EncapsulatedDocument=bytes(64 << 20))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ReadError, match="deflated DICOM data set inflates past"):
        read_radiograph(path, max_pixels=SIDE * SIDE)
    assert read_radiograph(path, max_pixels=8_000_000).shape == (SIDE, SIDE)  # cap 80 MiB: fine


def test_npy_header_must_be_numeric(tmp_path):
    np.save(tmp_path / "s.npy", np.array(["a" * 8] * (SIDE * SIDE)).reshape(SIDE, SIDE))
    with pytest.raises(ReadError, match="unsupported .npy dtype"):
        read_radiograph(tmp_path / "s.npy")


def test_chexmask_row_over_the_limit_is_a_read_error(tmp_path):
    (tmp_path / "m.csv").write_text("image_id,Height,Width,Right Lung\na,100000,100000,1 5\n")
    with pytest.raises(ReadError, match=r"row 1 .*100000x100000 is over the limit"):
        read_chexmask_csv(tmp_path / "m.csv")
    assert read_chexmask_csv(tmp_path / "m.csv", max_pixels=10**10)[0].width == 100000


def test_segment_refuses_every_bomb_in_bounded_memory(bombs, tmp_path):
    """Refusing the bombs (1 GB to 1 TB if inflated) costs well under 512 MB above the peak of the
    same run on the good image alone (the baseline: torch and both models, ~0.9 GB here, more on
    machines with more cores), measured in the same test so that the machine's own figure cancels."""
    ok = tmp_path / "ok.png"
    Image.fromarray(np.full((256, 256), 100, np.uint8)).save(ok)
    _, baseline_mb, _ = run_segment_measuring_peak([ok], tmp_path / "baseline")
    code, peak_mb, rows = run_segment_measuring_peak([*bombs.values(), ok], tmp_path / "out")
    assert code == 1
    assert sorted(r[0] for r in rows) == sorted(str(p) for p in bombs.values())
    assert all(("too large" in r[1]) or ("inflates past" in r[1]) for r in rows), rows
    assert peak_mb - baseline_mb < 512, f"peak RSS {peak_mb:.0f} MB, {baseline_mb:.0f} MB without the bombs"
    assert (tmp_path / "out" / "masks" / "ok_heart.png").is_file()
