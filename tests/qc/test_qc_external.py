"""`anatomix qc` on masks anatomix did not make: a folder of mask PNGs, a CheXmask CSV; the report."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from anatomix.anatomy import LUNGS_HEART, masks_to_landmarks
from anatomix.cli.qc import qc
from anatomix.io.chexmask import ChexmaskRow, write_chexmask_csv
from anatomix.qc import QC_COLUMNS
from anatomix.qc.inputs import iter_chexmask, iter_folder
from anatomix.qc.rca import load_references

S = 256


@pytest.fixture(scope="module")
def case():
    """(image (S, S) float, {key: bool mask}) from the first bundled atlas, upscaled to 256."""
    refs = load_references(None)
    img = np.kron(refs.images[0], np.ones((2, 2), np.float32))
    masks = {k: np.kron(refs.masks[0, i] >= 0.5, np.ones((2, 2), bool)) for i, k in enumerate(refs.keys)}
    return img, masks


def _write_folder(folder: Path, img, masks, bad: bool, scale=255):
    folder.mkdir(exist_ok=True)
    Image.fromarray((img * 255).astype(np.uint8)).save(folder / "good.png")
    for k, m in masks.items():
        Image.fromarray(m.astype(np.uint8) * scale).save(folder / f"good_{k}.png")
    if bad:
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / "swapped.png")
        swap = {"lungR": masks["lungL"], "lungL": masks["lungR"], "heart": masks["heart"]}
        for k, m in swap.items():
            Image.fromarray(m.astype(np.uint8) * scale).save(folder / f"swapped_{k}.png")


@pytest.mark.parametrize("scale", [1, 255])
def test_folder_of_mask_pngs(tmp_path, case, scale):
    img, masks = case
    _write_folder(tmp_path / "f", img, masks, bad=True, scale=scale)
    items = {it.image_id: it for it in iter_folder(tmp_path / "f")}
    assert set(items) == {"good", "swapped"}
    good = items["good"]
    assert good.error is None and good.pixels.shape == (S, S)
    for k in masks:
        np.testing.assert_array_equal(good.seg.masks[k], masks[k])
    assert good.seg.landmarks.size == 0  # no landmarks file: contours get traced by assess


def test_folder_with_wrong_mask_size_is_reported(tmp_path, case):
    img, masks = case
    _write_folder(tmp_path / "f", img, masks, bad=False)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "f" / "good_heart.png")
    (item,) = list(iter_folder(tmp_path / "f"))
    assert item.seg is None and "heart" in item.error


def _write_csv(path: Path, img, masks, with_landmark_row: bool):
    lm = masks_to_landmarks(masks, LUNGS_HEART)
    swap = {"lungR": masks["lungL"], "lungL": masks["lungR"], "heart": masks["heart"]}
    rows = [ChexmaskRow.from_masks("good", masks, landmarks=lm), ChexmaskRow.from_masks("swapped", swap)]
    if with_landmark_row:  # landmarks only, empty mask cells: rasterised from the landmarks
        rows.append(ChexmaskRow("lm_only", S, S, lm, {"Right Lung": "", "Left Lung": "", "Heart": ""}))
    rows.append(ChexmaskRow.from_masks("no_image", masks))
    write_chexmask_csv(path, rows)


def test_chexmask_csv_with_images(tmp_path, case):
    img, masks = case
    _write_csv(tmp_path / "m.csv", img, masks, with_landmark_row=True)
    images = tmp_path / "img"
    images.mkdir()
    for name in ("good", "swapped", "lm_only"):
        Image.fromarray((img * 255).astype(np.uint8)).save(images / f"{name}.png")
    items = {it.image_id: it for it in iter_chexmask(tmp_path / "m.csv", images)}
    assert items["good"].pixels is not None and items["good"].seg.landmarks.shape == (120, 2)
    for k in masks:
        np.testing.assert_array_equal(items["good"].seg.masks[k], masks[k])
    assert items["no_image"].pixels is None and items["no_image"].seg is not None
    lm_masks = items["lm_only"].seg.masks
    assert set(lm_masks) == {"lungR", "lungL", "heart"}
    assert all(lm_masks[k].sum() > 0.9 * masks[k].sum() for k in masks)


def _read_qc(path: Path):
    with open(path, newline="") as f:
        return {r["image_id"]: r for r in csv.DictReader(f)}


def test_cli_on_folder_with_report(tmp_path, case):
    img, masks = case
    _write_folder(tmp_path / "f", img, masks, bad=True)
    res = CliRunner().invoke(qc, [str(tmp_path / "f"), "-o", str(tmp_path / "out"), "--k", "1"])
    assert res.exit_code == 0, res.output
    rows = _read_qc(tmp_path / "out" / "qc.csv")
    assert list(next(iter(rows.values()))) == ["image_id", "path", *QC_COLUMNS]
    assert rows["good"]["qc_pass"] == "True", rows["good"]["qc_reasons"]
    assert float(rows["good"]["Dice RCA (Mean)"]) > 0.8
    assert rows["swapped"]["qc_pass"] == "False" and "lungs_swapped" in rows["swapped"]["qc_reasons"]
    assert float(rows["swapped"]["Dice RCA (Mean)"]) < 0.7
    page = (tmp_path / "out" / "report" / "index.html").read_text()
    assert page.index(">swapped ") < page.index(">good ")  # worst first
    for src in ("thumbs/good.png", "thumbs/swapped.png"):
        assert src in page and (tmp_path / "out" / "report" / src).is_file()
    assert "http" not in page  # nothing to fetch: opens offline from the folder


def test_cli_on_chexmask_csv_without_rca(tmp_path, case):
    img, masks = case
    _write_csv(tmp_path / "m.csv.gz", img, masks, with_landmark_row=False)
    res = CliRunner().invoke(qc, [str(tmp_path / "m.csv.gz"), "-o", str(tmp_path / "out"), "--no-rca"])
    assert res.exit_code == 0, res.output
    rows = _read_qc(tmp_path / "out" / "qc.csv")
    assert set(rows) == {"good", "swapped", "no_image"}
    assert rows["good"]["qc_pass"] == "True" and rows["good"]["Dice RCA (Mean)"] == ""
    assert rows["swapped"]["qc_pass"] == "False"
    assert "3 images: 2 pass, 1 flagged" in res.output


def test_cli_rejects_other_files(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    res = CliRunner().invoke(qc, [str(tmp_path / "x.txt"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "expected a folder, a CheXmask .csv/.csv.gz or a DICOM-SEG file" in res.output
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_chexmask_csv_finds_images_by_its_path_column(tmp_path, case):
    """A segmentations.csv of `anatomix segment` names each image in its path column: QC finds
    the image there when --images is not given (or does not hold it); a missing file is no image."""
    img, masks = case
    hosp = tmp_path / "hospA"
    hosp.mkdir()
    Image.fromarray((img * 255).astype(np.uint8)).save(hosp / "good.png")
    rows = [ChexmaskRow.from_masks("good", masks, extra={"path": str(hosp / "good.png")}),
            ChexmaskRow.from_masks("gone", masks, extra={"path": str(hosp / "gone.png")})]
    write_chexmask_csv(tmp_path / "m.csv", rows)
    items = {it.image_id: it for it in iter_chexmask(tmp_path / "m.csv")}
    assert items["good"].pixels is not None and items["good"].seg.path == hosp / "good.png"
    assert items["gone"].pixels is None and items["gone"].error is None
