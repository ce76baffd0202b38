"""DICOM-SEG output (``--format dicom-seg``) and input (``anatomix qc``).

Every SEG written here is read back twice, with highdicom's ``segread`` and with plain pydicom
(frames mapped to segments through the per-frame functional groups), and compared pixel for
pixel with the PNG masks of the same run. Sources: a MONOCHROME1 non-square DICOM without any
pixel spacing, a MONOCHROME2 DICOM with PixelSpacing (which highdicom 0.28 would write as Pixel
Measures that its own reader refuses), and a PNG (no SEG: a note).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from dicom_synth import write_dicom
from PIL import Image

hd = pytest.importorskip("highdicom", reason="DICOM-SEG output needs the 'dicom' extra (highdicom)")
import pydicom
from pydicom.uid import generate_uid

from anatomix.io.dicom_seg import (
    SEG_SOP_CLASS_UID,
    STRUCTURE_CODES,
    frame_segments,
    read_dicom_seg,
    write_dicom_seg,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "images" / "nih_00000001_000.png"


def _chest(shape: tuple[int, int]) -> np.ndarray:
    """The NIH example resized to ``shape``, as 12-bit samples (lungs dark)."""
    img = Image.open(EXAMPLE).convert("L").resize((shape[1], shape[0]), Image.BILINEAR)
    return (np.asarray(img, np.float64) / 255 * 4095).astype(np.uint16)


def _source(path: Path, shape=(150, 120), photometric="MONOCHROME2", **elements) -> Path:
    stored = _chest(shape)
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    return write_dicom(path, stored, photometric, StudyInstanceUID=generate_uid(),
                       SeriesInstanceUID=generate_uid(), PatientID="ANON", **elements)


def _masks(shape) -> dict[str, np.ndarray]:
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    return {"lungR": (xx < cols // 2) & (yy > 10), "lungL": (xx > cols // 2 + 3) & (yy < rows - 5),
            "heart": np.zeros(shape, bool)}  # an empty segment still has its frame


def _segread_masks(seg_path: Path, source_uid: str) -> dict[str, np.ndarray]:
    seg = hd.seg.segread(seg_path)
    arr = seg.get_pixels_by_source_instance([source_uid], combine_segments=False)[0]
    keys = {}
    for n in seg.get_segment_numbers():
        code = seg.get_segment_description(n).segmented_property_type.value
        keys[n] = next(k for k, (v, _) in STRUCTURE_CODES.items() if v == code)
    return {keys[n]: arr[..., i] > 0 for i, n in enumerate(seg.get_segment_numbers())}


@pytest.mark.parametrize("elements", [{}, {"PixelSpacing": [0.2, 0.25]}, {"ImagerPixelSpacing": [0.15, 0.15]}],
                         ids=["no-spacing", "pixel-spacing", "imager-spacing"])
def test_round_trip_highdicom_and_pydicom(tmp_path, elements):
    src = _source(tmp_path / "src.dcm", **elements)
    header = pydicom.dcmread(src, stop_before_pixels=True)
    masks = _masks((150, 120))
    out = write_dicom_seg(tmp_path / "seg.dcm", masks, src, algorithm="anatomix graph", version="9.9")

    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == SEG_SOP_CLASS_UID and ds.Modality == "SEG"
    assert (ds.Rows, ds.Columns) == (150, 120)
    assert ds.StudyInstanceUID == header.StudyInstanceUID and ds.PatientID == "ANON"
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == header.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == header.SOPInstanceUID
    for group in ds.PerFrameFunctionalGroupsSequence:
        source = group.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == header.SOPInstanceUID
    assert ds.SegmentationType == "BINARY" and int(ds.NumberOfFrames) == 3
    assert list(frame_segments(out)) == [1, 2, 3]
    for item, key in zip(ds.SegmentSequence, masks):
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == STRUCTURE_CODES[key][0]
        assert item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        alg = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (alg.AlgorithmName, alg.AlgorithmVersion) == ("anatomix graph", "9.9")
    assert "PixelMeasuresSequence" not in ds.SharedFunctionalGroupsSequence[0]

    plain = read_dicom_seg(out)
    assert plain.referenced_sop_instance_uids == [header.SOPInstanceUID]
    theirs = _segread_masks(out, header.SOPInstanceUID)
    for k, m in masks.items():
        assert np.array_equal(plain.masks[k], m), k
        assert np.array_equal(theirs[k], m), k


def test_same_result_same_uids_and_clavicle_laterality(tmp_path):
    src = _source(tmp_path / "src.dcm", shape=(64, 80))
    masks = {**_masks((64, 80)), "clavR": np.eye(64, 80, dtype=bool), "clavL": np.eye(64, 80, 5, dtype=bool)}
    a = pydicom.dcmread(write_dicom_seg(tmp_path / "a.dcm", masks, src, algorithm="x", version="1"))
    b = pydicom.dcmread(write_dicom_seg(tmp_path / "b.dcm", masks, src, algorithm="x", version="1"))
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    masks["lungR"] = ~masks["lungR"]
    c = pydicom.dcmread(write_dicom_seg(tmp_path / "c.dcm", masks, src, algorithm="x", version="1"))
    assert c.SOPInstanceUID != a.SOPInstanceUID
    back = read_dicom_seg(tmp_path / "c.dcm")
    assert np.array_equal(back.masks["clavR"], masks["clavR"]) and np.array_equal(back.masks["clavL"], masks["clavL"])


def test_wrong_shape_and_not_a_seg(tmp_path):
    from anatomix.errors import AnatomixError, ReadError
    from anatomix.io.dicom_seg import NotASegSource

    src = _source(tmp_path / "src.dcm", shape=(64, 80))
    with pytest.raises(AnatomixError, match="64x80"):
        write_dicom_seg(tmp_path / "seg.dcm", _masks((80, 64)), src, algorithm="x", version="1")
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(png)
    with pytest.raises(NotASegSource, match="not a DICOM"):
        write_dicom_seg(tmp_path / "seg.dcm", _masks((20, 20)), png, algorithm="x", version="1")
    with pytest.raises(ReadError, match="not a DICOM-SEG"):
        read_dicom_seg(src)


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    """One `segment` run with PNG + DICOM-SEG over two DICOM sources and a PNG."""
    from click.testing import CliRunner

    from anatomix.cli.segment import segment

    root = tmp_path_factory.mktemp("seg")
    inputs = root / "in"
    inputs.mkdir()
    _source(inputs / "mono1.dcm", shape=(300, 240), photometric="MONOCHROME1")  # non-square, no spacing
    _source(inputs / "mono2.dcm", shape=(256, 256), PixelSpacing=[0.3, 0.3])
    Image.open(EXAMPLE).convert("L").save(inputs / "plain.png")
    out = root / "out"
    args = [str(inputs), "-o", str(out), "--format", "png", "--format", "dicom-seg", "--no-qc",
            "--workers", "0", "--device", "cpu", "--model", "graph"]
    result = CliRunner().invoke(segment, args, catch_exceptions=False)
    return inputs, out, result, args


def test_batch_seg_equals_png_masks(batch_run):
    inputs, out, result, _ = batch_run
    assert result.exit_code == 0, result.output
    with open(out / "segmentations.csv", newline="") as f:
        ids = {r["image_id"] for r in csv.DictReader(f)}
    assert ids == {"mono1", "mono2", "plain"}
    for name in ("mono1", "mono2"):
        src = pydicom.dcmread(inputs / f"{name}.dcm", stop_before_pixels=True)
        seg_path = out / "dicom-seg" / f"{name}.dcm"
        plain = read_dicom_seg(seg_path)
        theirs = _segread_masks(seg_path, src.SOPInstanceUID)
        assert plain.referenced_sop_instance_uids == [src.SOPInstanceUID]
        assert plain.shape == (int(src.Rows), int(src.Columns))
        assert set(plain.masks) == {"lungR", "lungL", "heart"}
        assert plain.algorithm["lungR"][0] == "anatomix graph"
        for k in ("lungR", "lungL", "heart"):
            png = np.asarray(Image.open(out / "masks" / f"{name}_{k}.png")) > 0
            assert png.any(), (name, k)
            assert np.array_equal(plain.masks[k], png), (name, k)
            assert np.array_equal(theirs[k], png), (name, k)
    assert not (out / "dicom-seg" / "plain.dcm").exists()
    with open(out / "notes.csv", newline="") as f:
        notes = list(csv.DictReader(f))
    assert [n["image_id"] for n in notes] == ["plain"] and "not a DICOM" in notes[0]["note"]


def test_batch_resume_keeps_seg_and_notes(batch_run):
    from click.testing import CliRunner

    from anatomix.cli.segment import segment

    _, out, _, args = batch_run
    before = (out / "dicom-seg" / "mono1.dcm").read_bytes()
    result = CliRunner().invoke(segment, args, catch_exceptions=False)
    assert result.exit_code == 0 and "3 already done" in result.output, result.output
    assert (out / "dicom-seg" / "mono1.dcm").read_bytes() == before
    assert "plain" in (out / "notes.csv").read_text()
    (out / "dicom-seg" / "mono2.dcm").unlink()  # a missing SEG is redone, the others kept
    result = CliRunner().invoke(segment, args, catch_exceptions=False)
    assert "1 segmented" in result.output and "2 already done" in result.output, result.output
    assert (out / "dicom-seg" / "mono2.dcm").is_file()


def test_qc_reads_dicom_seg(batch_run, tmp_path):
    from click.testing import CliRunner

    from anatomix.cli.qc import qc

    inputs, out, _, _ = batch_run
    result = CliRunner().invoke(qc, [str(out / "dicom-seg"), "--images", str(inputs), "-o", str(tmp_path / "qc"),
                                     "--no-rca", "--no-report"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with open(tmp_path / "qc" / "qc.csv", newline="") as f:
        rows = {r["image_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"mono1", "mono2"}
    for name, row in rows.items():
        assert row["path"] == str(inputs / f"{name}.dcm")  # the source found by its SOP Instance UID
        assert "unreadable" not in row["qc_reasons"]


def test_qc_of_a_seg_without_its_image(batch_run, tmp_path):
    from click.testing import CliRunner

    from anatomix.cli.qc import qc

    _, out, _, _ = batch_run
    seg = out / "dicom-seg" / "mono2.dcm"
    result = CliRunner().invoke(qc, [str(seg), "-o", str(tmp_path / "qc"), "--no-rca", "--no-report"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with open(tmp_path / "qc" / "qc.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["image_id"] == "mono2" and row["path"] == str(seg)  # checked on the masks alone
    assert "unreadable" not in row["qc_reasons"]
