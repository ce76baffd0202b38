"""segment_batch / expand_inputs: hostile corpus, CSV layout, resume after a kill, overwrite, ids.

A fake segmenter (ellipses scaled to each image, nudged by its mean intensity) stands in for the
model so that masks are non-empty and differ between images; the real model's plumbing is
covered in tests/cli/test_segment.py.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_synth import write_dicom
from hostile import hostile_corpus, noise, png
from PIL import Image

from anatomix.anatomy import LUNGS_HEART, landmarks_to_masks
from anatomix.batch import CSV_NAME, QCHook, default_qc, segment_batch
from anatomix.errors import AnatomixError, CheckpointError, UsageError
from anatomix.io.chexmask import parse_landmarks, rle_decode
from anatomix.io.inputs import ERRORS_NAME, InputError, assign_image_ids, expand_inputs
from anatomix.models import load_segmenter
from anatomix.segmentation import Segmentation, Segmenter

RNG = np.random.default_rng(0)


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in the batch catches it."""


class FakeSegmenter(Segmenter):
    """Deterministic, batch-independent stand-in for a model (the Segmenter protocol)."""

    family, model_name = "fake", None
    template = LUNGS_HEART
    structures = LUNGS_HEART.keys

    def __init__(self, die_after: int | None = None, fail_shape=None, batch_sensitive: bool = False):
        self.die_after, self.fail_shape, self.seen = die_after, fail_shape, 0
        self.batch_sensitive = batch_sensitive

    def prepare(self, radiograph):
        return None

    def predict(self, radiographs, with_masks=True, prepared=None):
        out = []
        # like CPU kernels whose rounding depends on the batch: a shift that depends on the batch
        shift = sum(float(r.pixels.mean()) for r in radiographs) if self.batch_sensitive else 0.0
        for r in radiographs:
            if self.die_after is not None and self.seen >= self.die_after:
                raise Killed()
            if self.fail_shape is not None and r.shape == self.fail_shape:
                raise RuntimeError("model blew up on this shape")
            self.seen += 1
            xy = ellipses(r.shape, float(r.pixels.mean())) + shift
            out.append(Segmentation(r.image_id, r.path, r.shape, LUNGS_HEART, xy,
                                    landmarks_to_masks(xy, r.shape)))
        return out


def ellipses(shape, m: float) -> np.ndarray:
    h, w = shape
    parts = []
    for n, (cx, cy, rx, ry) in zip((44, 50, 26), ((0.3, 0.45, 0.12, 0.3), (0.7, 0.45, 0.12, 0.3),
                                                 (0.55, 0.65, 0.12, 0.1))):
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        parts.append(np.stack([(cx + 0.05 * m) * w + rx * w * np.cos(t), cy * h + ry * h * np.sin(t)], 1))
    return np.concatenate(parts)


# -- corpus ------------------------------------------------------------------------------------
def xray(h: int = 64, w: int = 64) -> np.ndarray:
    return noise(RNG, h, w)


def read_rows(out: Path) -> list[dict]:
    with open(out / CSV_NAME, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_errors(out: Path) -> dict[str, str]:
    with open(out / ERRORS_NAME, encoding="utf-8", newline="") as f:
        return {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}


def snapshot(out: Path) -> dict[str, bytes]:
    """Every output file's bytes (the lock file aside)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def simple_corpus(root: Path, n: int = 12) -> Path:
    for i in range(n):
        png(root / f"d{i % 3}" / f"img{i:02d}.png", xray(40 + i, 48))
    png(root / "d0" / "same.png", xray(50, 50))  # stem collisions across folders
    png(root / "d1" / "same.png", xray(52, 50))
    png(root / "d2" / "same.png", xray(54, 50))
    (root / "d2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


# -- the hostile corpus ------------------------------------------------------------------------
def test_hostile_corpus_no_crash_bad_files_listed_good_files_segmented(tmp_path):
    good, bad = hostile_corpus(tmp_path / "in")
    out = tmp_path / "out"
    summary = segment_batch([tmp_path / "in"], out, FakeSegmenter(), batch_size=4, workers=2, qc=False)
    assert summary.exit_code == 1
    errors = read_errors(out)
    assert set(errors) == bad
    assert all(reason.strip() for reason in errors.values())
    assert "empty" in errors["empty.png"] and "dangling" in errors["dangling.png"]
    assert "pixel data" in errors["nopixels.dcm"] and "directory" in errors["folder.png"]
    rows = read_rows(out)
    assert {Path(r["path"]).name for r in rows} == good
    assert summary.segmented == len(good) and summary.failed == len(bad)
    assert len({r["image_id"] for r in rows}) == len(rows)
    sizes = {Path(r["path"]).name: (int(r["Height"]), int(r["Width"])) for r in rows}
    assert sizes["huge.png"] == (4800, 6000) and sizes["nonsquare.png"] == (50, 130)
    for r in rows:  # masks at original size, 0/255, equal to the RLE columns
        h, w = int(r["Height"]), int(r["Width"])
        for key, label in (("lungR", "Right Lung"), ("lungL", "Left Lung"), ("heart", "Heart")):
            if (h, w) == (4800, 6000) and key != "heart":
                continue  # spare the time: the heart stands for the huge image
            mask = np.asarray(Image.open(out / "masks" / f"{r['image_id']}_{key}.png"))
            assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
            assert np.array_equal(mask == 255, rle_decode(r[label], h, w))
            assert mask.any()


# -- CSV layout --------------------------------------------------------------------------------
def test_csv_layout_landmarks_and_rle(tmp_path):
    src = png(tmp_path / "a.png", xray(60, 90))
    out = tmp_path / "out"
    seg = FakeSegmenter()
    assert segment_batch([src], out, seg, workers=0, qc=False).exit_code == 0
    with open(out / CSV_NAME, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["image_id", "path", "Height", "Width", "Landmarks", "Right Lung", "Left Lung", "Heart"]
    (row,) = read_rows(out)
    assert row["image_id"] == "a" and Path(row["path"]) == src.resolve()
    assert (row["Height"], row["Width"]) == ("60", "90")
    xy = parse_landmarks(row["Landmarks"])
    expected = ellipses((60, 90), float(np.asarray(Image.open(src), np.float32).mean() / 255))
    np.testing.assert_allclose(xy, expected, atol=1e-3)
    masks = landmarks_to_masks(expected, (60, 90))
    assert np.array_equal(rle_decode(row["Right Lung"], 60, 90), masks["lungR"])
    assert np.array_equal(rle_decode(row["Heart"], 60, 90), masks["heart"])
    assert read_errors(out) == {}


def test_nifti_format_and_overlays(tmp_path):
    src = png(tmp_path / "a.png", xray(40, 56))
    nii = tmp_path / "b.nii.gz"
    nib.save(nib.Nifti1Image(RNG.random((30, 44)).astype(np.float32), np.diag([2.0, 3.0, 1, 1])), nii)
    out = tmp_path / "out"
    s = segment_batch([src, nii], out, FakeSegmenter(), workers=1, formats=("png", "nifti"),
                      overlays=True, qc=False)
    assert s.exit_code == 0 and s.segmented == 2
    for image_id in ("a", "b"):
        png_mask = np.asarray(Image.open(out / "masks" / f"{image_id}_lungL.png")) > 0
        nii_mask = nib.load(out / "masks" / f"{image_id}_lungL.nii.gz")
        assert np.asarray(nii_mask.dataobj).sum() == png_mask.sum() > 0
        assert Image.open(out / "overlays" / f"{image_id}.png").mode == "RGB"
    np.testing.assert_allclose(nib.load(out / "masks" / "b_heart.nii.gz").affine, np.diag([2.0, 3.0, 1, 1]))


def test_qc_columns_and_qc_failure(tmp_path):
    a, b = png(tmp_path / "a.png", xray()), png(tmp_path / "b.png", xray(70, 70))

    def assess(seg, pixels, node_std=None, segmenter=None):
        if seg.shape == (70, 70):
            raise ValueError("qc broke")
        return {"qc_score": np.float32(0.25), "qc_flag": True, "qc_reason": None}

    out = tmp_path / "out"
    s = segment_batch([a, b], out, FakeSegmenter(), qc=QCHook(("qc_score", "qc_flag", "qc_reason"), assess))
    assert s.exit_code == 0 and s.qc_failures == 1 and "QC failed on 1" in s.line()
    rows = {r["image_id"]: r for r in read_rows(out)}
    assert list(rows["a"])[-3:] == ["qc_score", "qc_flag", "qc_reason"]
    assert (rows["a"]["qc_score"], rows["a"]["qc_flag"], rows["a"]["qc_reason"]) == ("0.25", "True", "")
    assert rows["b"]["qc_score"] == "" and rows["b"]["Heart"]


def test_a_failing_image_does_not_fail_its_batch(tmp_path):
    srcs = [png(tmp_path / f"i{i}.png", xray(64 + (i == 2) * 8, 64)) for i in range(5)]
    out = tmp_path / "out"
    s = segment_batch(srcs, out, FakeSegmenter(fail_shape=(72, 64)), batch_size=5, workers=0, qc=False)
    assert s.exit_code == 1 and s.segmented == 4
    assert read_errors(out) == {"i2.png": "segmentation failed: RuntimeError: model blew up on this shape"}


# -- inputs ------------------------------------------------------------------------------------
def test_expand_inputs_every_kind_of_entry(tmp_path):
    root = simple_corpus(tmp_path / "in")
    single = png(tmp_path / "single.png", xray())
    (tmp_path / "list.txt").write_text(f"# a comment\n\n{single}\nin/d0/img00.png\nmissing.png\n")
    with open(tmp_path / "list.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "path"], ["x", "in/d1/img01.png"], ["y", str(root / "d2")]])
    os.symlink(tmp_path / "nowhere.png", tmp_path / "dangling.png")
    entries = [tmp_path / "list.txt", tmp_path / "list.csv", str(root / "d0" / "*.png"),
               str(tmp_path / "nomatch*.dcm"), tmp_path / "dangling.png", tmp_path / "absent.png",
               single]  # single twice: once listed, once given
    paths, errors = expand_inputs(entries)
    names = sorted(p.name for p in paths)
    assert names == sorted(["single.png", "img00.png", "img03.png", "img06.png", "img09.png", "same.png",
                            "img01.png", "img02.png", "img05.png", "img08.png", "img11.png", "same.png",
                            "broken.png"])
    assert paths == sorted(paths, key=str) and all(p.is_absolute() for p in paths)
    reasons = {Path(e.path).name: e.reason for e in errors}
    assert reasons == {"missing.png": "no such file or directory",
                       "nomatch*.dcm": "glob pattern matched no files",
                       "dangling.png": "dangling symlink (its target does not exist)",
                       "absent.png": "no such file or directory"}


def test_expand_inputs_finds_dicom_without_suffix_and_skips_other_files(tmp_path):
    write_dicom(tmp_path / "IM0001", RNG.integers(0, 4096, (40, 40)))
    (tmp_path / "README").write_text("hello")
    (tmp_path / "table.csv").write_text("a,b\n")
    paths, errors = expand_inputs([tmp_path])
    assert [p.name for p in paths] == ["IM0001"] and errors == []


def test_assign_image_ids_unique_deterministic_case_insensitive():
    paths = ["/b/x.png", "/a/x.png", "/c/x_1.png", "/d/X.dcm", "/e/scan.nii.gz", "/f/y.png"]
    ids = assign_image_ids(paths)
    assert ids == ["x_2", "x", "x_1", "X_3", "scan", "y"]
    assert assign_image_ids(list(reversed(paths))) == list(reversed(ids))
    assert assign_image_ids(["/f/y.png"], taken=["Y"]) == ["y_1"]


# -- resume ------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 2])
def test_killed_runs_resume_to_identical_outputs(tmp_path, workers):
    root = simple_corpus(tmp_path / "in")
    reference = tmp_path / "reference"
    full = segment_batch([root], reference, FakeSegmenter(batch_sensitive=True), batch_size=3, workers=workers,
                         qc=False)
    assert full.exit_code == 1 and full.segmented == 15
    out = tmp_path / "out"
    for die_after in (2, 7):  # killed in predict: each run's count starts again over what is left
        with pytest.raises(Killed):
            segment_batch([root], out, FakeSegmenter(die_after=die_after, batch_sensitive=True), batch_size=3,
                          workers=workers, qc=False)

    def die_after_row(item):  # killed between rows: the next run starts inside a batch
        raise Killed()

    with pytest.raises(Killed):
        segment_batch([root], out, FakeSegmenter(batch_sensitive=True), batch_size=3, workers=workers, qc=False,
                      on_image=die_after_row)
    assert workers or len(read_rows(out)) % 3 != 0
    # what a SIGKILL may also leave: half a CSV line and a temporary file of a dead process
    with open(out / CSV_NAME, "ab") as f:
        f.write(b"img10,/some/where/img10.png,50,48,[[1,2")
    (out / "masks" / ".img10_lungR.png.tmp-999999999-abcd1234").write_bytes(b"partial")
    resumed = segment_batch([root], out, FakeSegmenter(batch_sensitive=True), batch_size=3, workers=workers,
                            qc=False)
    assert resumed.skipped > 0 and resumed.skipped + resumed.segmented == 15
    assert snapshot(out) == snapshot(reference)
    ids = [r["image_id"] for r in read_rows(out)]
    assert len(ids) == len(set(ids)) == 15 and {"same", "same_1", "same_2"} <= set(ids)


def test_rerun_skips_overwrite_redoes_and_missing_files_are_redone(tmp_path):
    root = simple_corpus(tmp_path / "in", n=4)
    out = tmp_path / "out"
    first = segment_batch([root], out, FakeSegmenter(), workers=0, qc=False)
    assert (first.segmented, first.skipped, first.failed) == (7, 0, 1)
    before = snapshot(out)
    again = segment_batch([root], out, FakeSegmenter(), workers=0, qc=False)
    assert (again.segmented, again.skipped, again.failed) == (0, 7, 1)
    assert snapshot(out) == before
    (out / "masks" / "img01_heart.png").unlink()
    fixed = segment_batch([root], out, FakeSegmenter(), workers=0, qc=False)
    assert (fixed.segmented, fixed.skipped) == (1, 6)
    assert sorted(r["image_id"] for r in read_rows(out)) == sorted(r["image_id"] for r in read_rows(out))
    assert len(read_rows(out)) == 7 and snapshot(out).keys() == before.keys()
    forced = segment_batch([root], out, FakeSegmenter(), workers=0, qc=False, overwrite=True)
    assert (forced.segmented, forced.skipped) == (7, 0) and len(read_rows(out)) == 7


def test_errors_csv_keeps_only_what_still_fails(tmp_path):
    a, b = png(tmp_path / "a.png", xray()), tmp_path / "b.png"
    b.write_bytes(b"junk")
    out = tmp_path / "out"
    assert segment_batch([a, b], out, FakeSegmenter(), qc=False).exit_code == 1
    other = tmp_path / "other.png"
    other.write_bytes(b"")
    segment_batch([other], out, FakeSegmenter(), qc=False)
    assert set(read_errors(out)) == {"b.png", "other.png"}  # b was not retried: still listed
    png(b, xray())
    s = segment_batch([a, b], out, FakeSegmenter(), qc=False)
    assert (s.segmented, s.skipped, s.exit_code) == (1, 1, 0)
    assert set(read_errors(out)) == {"other.png"}
    assert len(read_rows(out)) == 2


def test_extra_columns_of_an_older_csv_are_kept_on_resume(tmp_path):
    a, b = png(tmp_path / "a.png", xray()), png(tmp_path / "b.png", xray())
    out = tmp_path / "out"
    hook = QCHook(("qc_score",), lambda seg, pixels, node_std=None, segmenter=None: {"qc_score": 0.5})
    segment_batch([a], out, FakeSegmenter(), qc=hook)
    segment_batch([a, b], out, FakeSegmenter(), qc=False)
    rows = {r["image_id"]: r for r in read_rows(out)}
    assert rows["a"]["qc_score"] == "0.5" and rows["b"]["qc_score"] == ""


def test_out_dir_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(AnatomixError, match="not a directory"):
        segment_batch([tmp_path], tmp_path / "file", FakeSegmenter(), qc=False)
    with pytest.raises(UsageError, match=r"unknown mask format\(s\) \['jpeg'\]; choose from"):
        segment_batch([tmp_path], tmp_path / "o", FakeSegmenter(), formats=("jpeg",), qc=False)
    with pytest.raises(UsageError, match="batch_size"):
        segment_batch([tmp_path], tmp_path / "o", FakeSegmenter(), batch_size=0, qc=False)
    with pytest.raises(UsageError, match="QCHook"):
        segment_batch([tmp_path], tmp_path / "o", FakeSegmenter(), qc=(["a"], lambda *a, **k: {}))


def test_summary_line_and_input_error_record(tmp_path):
    s = segment_batch([tmp_path / "absent.png"], tmp_path / "out", FakeSegmenter(), qc=False)
    assert s.exit_code == 1 and s.errors == [InputError(str(tmp_path / "absent.png"), "no such file or directory")]
    assert "0 segmented" in s.line() and "1 failed" in s.line()


# -- models ------------------------------------------------------------------------------------
def test_load_segmenter_reads_the_family(tmp_path):
    import torch

    from anatomix.graphs.inference import GraphSegmenter
    from anatomix.graphs.model import GraphConfig, HybridGNet

    cfg = GraphConfig(image_size=64, latent_dim=8, encoder_channels=(4, 8), graph_channels=(8, 8),
                      cheb_k=2, n_skips=1)
    torch.save({"model": HybridGNet(cfg).state_dict(), "family": "graph", "graph_config": cfg.to_dict()},
               tmp_path / "g.pt")
    assert isinstance(load_segmenter(str(tmp_path / "g.pt"), "cpu"), GraphSegmenter)
    torch.save({"model": {}, "family": "banana"}, tmp_path / "b.pt")
    with pytest.raises(AnatomixError, match="unknown model family 'banana'"):
        load_segmenter(str(tmp_path / "b.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_segmenter(str(tmp_path / "junk.pt"))
    with pytest.raises(AnatomixError, match="unknown model"):
        load_segmenter("no-such-model")


class LandmarksOnlySegmenter(FakeSegmenter):
    """Like the graph family: ``predict(..., with_masks=False)`` returns landmarks only."""

    def predict(self, radiographs, with_masks=True, prepared=None):
        segs = super().predict(radiographs)
        self.asked_masks = with_masks
        if not with_masks:
            for s in segs:
                s.masks = {}
        return segs


def test_masks_rasterised_by_writers_when_predict_can_skip_them(tmp_path):
    root = simple_corpus(tmp_path / "in", n=3)
    a, b = tmp_path / "a", tmp_path / "b"
    segment_batch([root], a, FakeSegmenter(), workers=2, qc=False)
    seg = LandmarksOnlySegmenter()
    segment_batch([root], b, seg, workers=2, qc=False)
    assert seg.asked_masks is False
    assert snapshot(a) == snapshot(b)


def test_default_qc_columns_from_anatomix_qc(tmp_path):
    from anatomix.qc import QC_COLUMNS

    hook = default_qc()
    assert hook.columns == tuple(QC_COLUMNS)
    src = png(tmp_path / "a.png", xray(96, 96))
    s = segment_batch([src], tmp_path / "out", FakeSegmenter(), workers=0, qc=True)
    assert s.exit_code == 0 and s.qc_failures == 0 and s.qc_columns == hook.columns
    with open(tmp_path / "out" / CSV_NAME, newline="") as f:
        header = next(csv.reader(f))
    assert header[8:] == list(hook.columns)
    (row,) = read_rows(tmp_path / "out")
    assert row["qc_pass"] in ("True", "False") and row["area_lungR"] != ""


def test_out_dir_inside_an_input_folder_is_not_segmented_on_rerun(tmp_path):
    root = simple_corpus(tmp_path / "in", n=2)
    first = segment_batch([root], root / "out", FakeSegmenter(), qc=False, overlays=True)
    second = segment_batch([root], root / "out", FakeSegmenter(), qc=False, overlays=True)
    assert second.total == first.total and (second.segmented, second.skipped) == (0, first.segmented)


def test_qc_that_takes_the_segmenter_gets_it(tmp_path):
    calls = []

    def assess(seg, pixels, node_std=None, segmenter=None):
        from anatomix.io.record import Radiograph

        flipped = segmenter.predict([Radiograph(np.ascontiguousarray(pixels[:, ::-1]))])[0]
        calls.append(flipped.shape)
        return {"flip": 1.0}

    srcs = [png(tmp_path / f"{i}.png", xray()) for i in range(3)]
    s = segment_batch(srcs, tmp_path / "out", LandmarksOnlySegmenter(), workers=2, qc=QCHook(("flip",), assess))
    assert s.qc_failures == 0 and calls == [(64, 64)] * 3
    assert [r["flip"] for r in read_rows(tmp_path / "out")] == ["1.0"] * 3  # anatomix.qc.format_row


class PreparingSegmenter(FakeSegmenter):
    """Splits its work: ``prepare`` (per image, in the reader threads) and ``predict(prepared=)``."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.prepare_threads, self.got_prepared = set(), 0

    def prepare(self, radiograph):
        import threading

        self.prepare_threads.add(threading.current_thread().name)
        if radiograph.shape == (72, 64):
            raise ValueError("cannot prepare this one")
        return float(radiograph.pixels.mean())

    def predict(self, radiographs, with_masks=True, prepared=None):
        if prepared is not None:
            assert prepared == [float(r.pixels.mean()) for r in radiographs]
            self.got_prepared += len(radiographs)
        return super().predict(radiographs)


def test_prepare_runs_in_reader_threads_and_changes_nothing(tmp_path):
    srcs = [png(tmp_path / "in" / f"i{i}.png", xray(64 + (i == 2) * 8, 64)) for i in range(7)]
    plain = segment_batch(srcs, tmp_path / "a", FakeSegmenter(), batch_size=3, workers=2, qc=False)
    seg = PreparingSegmenter()
    split = segment_batch(srcs, tmp_path / "b", seg, batch_size=3, workers=2, qc=False)
    assert seg.got_prepared == 6 and seg.prepare_threads and all("read" in t for t in seg.prepare_threads)
    assert (plain.segmented, split.segmented) == (7, 6)
    assert read_errors(tmp_path / "b") == {"i2.png": "segmentation failed: ValueError: cannot prepare this one"}
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert {k: v for k, v in a.items() if "i2" not in k and not k.endswith(".csv")} == \
        {k: v for k, v in b.items() if not k.endswith(".csv")}


def test_a_folder_written_by_one_model_is_not_resumed_by_another(tmp_path):
    import json

    from anatomix.errors import AnatomixError

    src = [png(tmp_path / f"{i}.png", xray()) for i in range(2)]
    out = tmp_path / "out"
    first = FakeSegmenter()
    first.model_name = "model_a.pt"
    segment_batch(src, out, first, workers=0, qc=False)
    assert json.loads((out / "run.json").read_text())["model"] == "anatomix model_a"
    again = FakeSegmenter()
    again.model_name = "model_a.pt"
    assert segment_batch(src, out, again, workers=0, qc=False).skipped == 2  # same model: resume
    other = FakeSegmenter()
    other.model_name = "model_b.pt"
    with pytest.raises(AnatomixError, match="model_a.*model_b"):
        segment_batch(src, out, other, workers=0, qc=False)
    redone = segment_batch(src, out, other, workers=0, qc=False, overwrite=True)
    assert (redone.segmented, redone.skipped) == (2, 0)
    assert json.loads((out / "run.json").read_text())["model"] == "anatomix model_b"
