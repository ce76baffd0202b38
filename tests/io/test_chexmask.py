"""CheXmask codec: RLE, the Landmarks column in its three encodings, CSV read/write and resume."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from anatomix.errors import ReadError
from anatomix.io.chexmask import (
    ChexmaskRow,
    chexmask_header,
    format_landmarks,
    iter_chexmask_csv,
    parse_landmarks,
    read_chexmask_csv,
    rle_decode,
    rle_encode,
    write_chexmask_csv,
)

RNG = np.random.default_rng(7)


def reference_decode(rle: str, height: int, width: int) -> np.ndarray:
    """The loop decoder of the CheXmask authors' examples (independent of ours)."""
    runs = [int(x) for x in rle.split()]
    flat = np.zeros(height * width, dtype=bool)
    for start, length in zip(runs[0::2], runs[1::2], strict=True):
        flat[start - 1 : start - 1 + length] = True
    return flat.reshape(height, width)


def disk(height: int, width: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 < r**2


# -- RLE ---------------------------------------------------------------------------------------
def test_rle_hand_example_is_row_major_and_one_based():
    mask = np.array([[0, 1, 1, 0],
                     [0, 0, 0, 1],
                     [1, 0, 0, 0]], dtype=bool)
    assert rle_encode(mask) == "2 2 8 2"
    np.testing.assert_array_equal(rle_decode("2 2 8 2", 3, 4), mask)
    assert rle_encode(np.ones((2, 3), dtype=np.uint8)) == "1 6"


@pytest.mark.parametrize("mask", [
    np.zeros((5, 7), bool),
    np.ones((5, 7), bool),
    np.eye(6, 9, dtype=bool),
    RNG.random((31, 17)) > 0.5,
    disk(40, 60, 30, 20, 12),
    np.pad(np.ones((1, 1), bool), ((0, 4), (6, 0))),  # a single pixel at the last column
], ids=["empty", "full", "diagonal", "random", "disk", "corner"])
def test_rle_round_trip_and_matches_reference(mask):
    rle = rle_encode(mask)
    out = rle_decode(rle, *mask.shape)
    assert out.dtype == bool and out.shape == mask.shape
    np.testing.assert_array_equal(out, mask)
    np.testing.assert_array_equal(reference_decode(rle, *mask.shape), mask)


def test_rle_large_mask_round_trip():
    mask = disk(3000, 3000, 1400.3, 1600.7, 900) | disk(3000, 3000, 2500, 500, 300)
    rle = rle_encode(mask)
    assert len(rle.split()) == 2 * (1800 + 600)  # one run per row that each disk covers
    np.testing.assert_array_equal(rle_decode(rle, 3000, 3000), mask)


@pytest.mark.parametrize("empty", ["", "   ", None, float("nan")])
def test_rle_empty_decodes_to_empty_mask(empty):
    out = rle_decode(empty, 3, 4)
    assert out.shape == (3, 4) and not out.any()
    assert rle_encode(out) == ""


@pytest.mark.parametrize("bad", ["1 2 3", "0 2", "11 3", "a b", "3 -1"])
def test_rle_decode_rejects_malformed(bad):
    with pytest.raises(ValueError):
        rle_decode(bad, 3, 4)


# -- Landmarks column --------------------------------------------------------------------------
INT_XY = np.array([[12, 34], [56, 78], [910, 1112]])
FLOAT_XY = np.array([[12.5, 34.25], [56.0, 78.125], [910.75, 1112.0]])


@pytest.mark.parametrize("text, expected", [
    ("[[12, 34], [56, 78], [910, 1112]]", INT_XY),                      # JSON array, ints
    (json.dumps(FLOAT_XY.tolist()), FLOAT_XY),                          # JSON array, floats
    ("12,34,56,78,910,1112", INT_XY),                                   # comma-joined
    (" 12, 34 ,56,78,910,1112\n", INT_XY),                              # comma-joined, stray spaces
    (str(INT_XY), INT_XY),                                              # numpy repr, ints, lines
    (str(FLOAT_XY), FLOAT_XY),                                          # numpy repr, floats
    ("[[ 12  34]\n [ 56  78]\n [910 1112]]", INT_XY),                   # by hand
    (np.array2string(FLOAT_XY, separator=", "), FLOAT_XY),              # numpy repr with commas
    ("[[1.25e+01 3.425e+01]\n [5.6e+01 7.8125e+01]\n [9.1075e+02 1.112e+03]]", FLOAT_XY),
], ids=["json-int", "json-float", "comma", "comma-spaces", "repr-int", "repr-float", "repr-hand",
        "repr-commas", "repr-sci"])
def test_parse_landmarks_encodings(text, expected):
    out = parse_landmarks(text)
    assert out.shape == (3, 2) and out.dtype == np.float64
    np.testing.assert_array_equal(out, expected)


def test_parse_landmarks_real_166_node_repr():
    xy = RNG.uniform(0, 1024, (166, 2)).astype(np.float32)
    np.testing.assert_allclose(parse_landmarks(str(xy)), xy, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(parse_landmarks(str(xy.round().astype(int))), xy.round())


@pytest.mark.parametrize("bad", ["", "nan", "1,2,3", "[[1, 2, 3], [4, 5, 6]]", "[[1 2]\n ...\n [5 6]]",
                                 "{'x': 1}"])
def test_parse_landmarks_rejects_malformed(bad):
    with pytest.raises(ValueError):
        parse_landmarks(bad)


def test_format_landmarks_reads_back_exactly_after_rounding():
    xy = RNG.uniform(-5, 3000, (166, 2))
    text = format_landmarks(xy)
    assert text.startswith("[[") and " " not in text
    np.testing.assert_array_equal(parse_landmarks(text), np.round(xy, 3))
    assert format_landmarks(parse_landmarks(text)) == text


@pytest.mark.parametrize("bad", [np.zeros((4, 3)), np.zeros(8), np.array([[1.0, np.nan]])])
def test_format_landmarks_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        format_landmarks(bad)


# -- rows --------------------------------------------------------------------------------------
def make_rows() -> list[ChexmaskRow]:
    h, w = 61, 47
    lungs = {"lungR": disk(h, w, 14, 30, 10), "lungL": disk(h, w, 33, 30, 11), "heart": disk(h, w, 26, 42, 8)}
    first = ChexmaskRow.from_masks("img-1", lungs, landmarks=RNG.uniform(0, 47, (120, 2)),
                                   extra={"path": "a/img-1.png", "Dice RCA (Mean)": "0.91"})
    with_clavicle = dict(lungs, clavR=disk(h, w, 10, 5, 3))
    second = ChexmaskRow.from_masks("img,2 \"quoted\"", with_clavicle,
                                    extra={"Dice RCA (Mean)": "0.8", "note": "two\nlines"})
    no_masks = ChexmaskRow("img-3", 10, 20, landmarks=None,
                           rles={"Right Lung": "", "Left Lung": "", "Heart": ""}, extra={"path": "c.png"})
    return [first, second, no_masks]


def assert_same_rows(read: list[ChexmaskRow], written: list[ChexmaskRow]) -> None:
    assert [r.image_id for r in read] == [r.image_id for r in written]
    for a, b in zip(read, written, strict=True):
        assert (a.height, a.width) == (b.height, b.width)
        if b.landmarks is None:
            assert a.landmarks is None
        else:
            np.testing.assert_array_equal(a.landmarks, np.round(b.landmarks, 3))
        assert {k: v for k, v in a.rles.items() if v} == {k: v for k, v in b.rles.items() if v}
        assert {k: v for k, v in a.extra.items() if v} == b.extra


def test_row_masks_use_structure_keys():
    row = make_rows()[1]
    masks = row.masks()
    assert list(masks) == ["lungR", "lungL", "heart", "clavR"]
    assert all(m.shape == (61, 47) and m.dtype == bool for m in masks.values())
    np.testing.assert_array_equal(masks["clavR"], disk(61, 47, 10, 5, 3))


def test_from_masks_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown structure"):
        ChexmaskRow.from_masks("x", {"liver": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="one shape"):
        ChexmaskRow.from_masks("x", {"lungR": np.zeros((3, 3)), "heart": np.zeros((3, 4))})


# -- CSV ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz"])
def test_written_csv_reads_back_identical(tmp_path, name):
    rows = make_rows()
    path = tmp_path / name
    write_chexmask_csv(path, rows)
    assert_same_rows(read_chexmask_csv(path), rows)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind
    # writing what was read gives the same bytes
    again = tmp_path / ("again" + name[3:])
    write_chexmask_csv(again, read_chexmask_csv(path))
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as a, opener(again, "rb") as b:
        assert a.read() == b.read()


def test_written_header_order(tmp_path):
    path = tmp_path / "out.csv"
    write_chexmask_csv(path, make_rows())
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["image_id", "path", "Height", "Width", "Landmarks", "Right Lung", "Left Lung", "Heart",
                      "Right Clavicle", "Dice RCA (Mean)", "note"]
    assert chexmask_header() == ["image_id", "Height", "Width", "Landmarks", "Right Lung", "Left Lung", "Heart"]


def test_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "out.csv"
    write_chexmask_csv(path, make_rows())
    before = path.read_bytes()
    bad = ChexmaskRow("x", 2, 2, rles={"Liver": "1 1"})
    with pytest.raises(ValueError, match="Liver"):
        write_chexmask_csv(path, [bad])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def chexmask_style_csv(path: Path, id_column: str, landmark_cells: list[str], masks: list[dict]) -> None:
    """A CSV laid out like the CheXmask release (column order of the VinDr/MIMIC files)."""
    header = [id_column, "Dice RCA (Mean)", "Dice RCA (Max)", "Landmarks", "Left Lung", "Right Lung", "Heart",
              "Height", "Width"]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, (cell, m) in enumerate(zip(landmark_cells, masks, strict=True)):
            h, w = m["lungL"].shape
            writer.writerow([f"case{i}", "0.85", "0.9", cell, rle_encode(m["lungL"]), rle_encode(m["lungR"]),
                             rle_encode(m["heart"]), h, w])


def case_masks(h: int, w: int) -> dict:
    return {"lungR": disk(h, w, 0.3 * w, 0.5 * h, 0.2 * w), "lungL": disk(h, w, 0.7 * w, 0.5 * h, 0.2 * w),
            "heart": disk(h, w, 0.55 * w, 0.7 * h, 0.15 * w)}


@pytest.mark.parametrize("encoding", ["json", "comma", "repr"])
@pytest.mark.parametrize("name, id_column", [("cm.csv", "image_id"), ("cm.csv.gz", "dicom_id"),
                                              ("cx8.csv", "Image Index"), ("cxp.csv.gz", "Path")])
def test_reads_chexmask_style_csv(tmp_path, encoding, name, id_column):
    xy = [RNG.integers(0, 1024, (120, 2)), RNG.integers(0, 1024, (120, 2)).astype(float) + 0.5]
    cells = {
        "json": [json.dumps(a.tolist()) for a in xy],
        "comma": [",".join(str(v) for v in a.ravel().tolist()) for a in xy],
        "repr": [str(a) for a in xy],
    }[encoding]
    masks = [case_masks(40, 30), case_masks(25, 50)]
    path = tmp_path / name
    chexmask_style_csv(path, id_column, cells, masks)
    rows = read_chexmask_csv(path)
    assert [r.image_id for r in rows] == ["case0", "case1"]
    for row, a, m in zip(rows, xy, masks, strict=True):
        np.testing.assert_array_equal(row.landmarks, a)
        assert (row.height, row.width) == m["heart"].shape
        assert row.extra == {"Dice RCA (Mean)": "0.85", "Dice RCA (Max)": "0.9"}
        decoded = row.masks()
        assert set(decoded) == {"lungR", "lungL", "heart"}
        for key in decoded:
            np.testing.assert_array_equal(decoded[key], m[key])


def test_reading_streams_rows(tmp_path):
    path = tmp_path / "cm.csv"
    chexmask_style_csv(path, "image_id", ["1,2,3,4"] * 3, [case_masks(8, 8)] * 3)
    rows = iter_chexmask_csv(path)
    assert next(rows).image_id == "case0"
    assert [r.image_id for r in rows] == ["case1", "case2"]


def test_empty_landmarks_and_masks_cells(tmp_path):
    path = tmp_path / "cm.csv"
    path.write_text("image_id,Height,Width,Landmarks,Right Lung,Heart\nx,4,5,,,nan\ny,4,5,nan,1 3,\n")
    rows = read_chexmask_csv(path)
    assert rows[0].landmarks is None and rows[1].landmarks is None
    assert rows[0].rles == {"Right Lung": "", "Heart": ""}
    assert rows[1].masks()["lungR"].sum() == 3 and not rows[1].masks()["heart"].any()


def test_missing_file_is_read_error(tmp_path):
    with pytest.raises(ReadError, match="nope.csv"):
        read_chexmask_csv(tmp_path / "nope.csv")


@pytest.mark.parametrize("header, missing", [
    ("id,Height,Width,Heart", "image_id or dicom_id"),
    ("image_id,Width,Heart", "Height"),
    ("image_id,Height,Width,Dice", "no Landmarks"),
    ("", "empty file"),
])
def test_missing_columns_is_read_error(tmp_path, header, missing):
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n" if header else "")
    with pytest.raises(ReadError, match=missing) as info:
        iter_chexmask_csv(path)  # the header is checked before any row is asked for
    assert info.value.path == str(path)


@pytest.mark.parametrize("bad_row, cause", [
    ("y,four,5,,1 3", "could not convert"),
    ("y,4,5,1;2,1 3", "not a landmark list"),
    ("y,4,5,,1 x", "malformed RLE"),
    ("y,4,5,", "wrong number of fields"),
    ("y,4,5,,1 3,extra", "wrong number of fields"),
    (",4,5,,1 3", "empty image_id"),
])
def test_malformed_row_is_read_error_naming_the_row(tmp_path, bad_row, cause):
    path = tmp_path / "bad.csv"
    path.write_text(f"image_id,Height,Width,Landmarks,Right Lung\nx,4,5,\"1,2,3,4\",1 3\n{bad_row}\n")
    rows = iter_chexmask_csv(path)
    assert next(rows).image_id == "x"
    with pytest.raises(ReadError, match=f"row 2 .*{cause}"):
        next(rows)


def test_corrupt_gzip_is_read_error(tmp_path):
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ReadError, match="bad.csv.gz"):
        read_chexmask_csv(path)
