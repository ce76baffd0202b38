"""The static HTML report and the CSV cell formatting."""

from __future__ import annotations

import numpy as np

from anatomix.qc import QC_COLUMNS, format_row
from anatomix.qc.report import ReportWriter, thumbnail


def _row(ok, rca, reasons=""):
    r = {c: float("nan") for c in QC_COLUMNS}
    r.update({"qc_pass": ok, "Dice RCA (Mean)": rca, "qc_reasons": reasons, "lr_order_ok": None})
    return r


def test_report_orders_worst_first_and_escapes(tmp_path):
    m = np.zeros((64, 48), bool)
    m[10:40, 5:20] = True
    masks = {"lungR": m, "lungL": m[:, ::-1], "heart": np.zeros_like(m)}
    rw = ReportWriter(tmp_path / "rep")
    rw.add("good", _row(True, 0.9), np.random.default_rng(0).random((64, 48)), masks)
    rw.add("<b>bad</b>", _row(False, 0.8, "holes(lungR=1);holes(lungL=2);lungs_swapped"), None, masks)
    rw.add("worse", _row(False, 0.3, "rca_low(0.30)"), None, masks)
    rw.add("good", _row(True, 0.95), None, masks)  # duplicate id gets its own thumbnail
    page = (rw.close()).read_text()
    assert page.index(">worse ") < page.index("&lt;b&gt;bad&lt;/b&gt;") < page.index(">good ")
    assert "<b>bad</b>" not in page
    assert (tmp_path / "rep" / "thumbs" / "good.png").is_file()
    assert (tmp_path / "rep" / "thumbs" / "good_2.png").is_file()
    # reason table counts images, not occurrences
    assert "<td>holes</td><td>1</td>" in page and "<td>rca_low</td><td>1</td>" in page
    assert "<b>4</b> images" in page and "<b>2</b> flagged" in page


def test_thumbnail_draws_contours():
    m = np.zeros((100, 100), bool)
    m[20:80, 20:80] = True
    t = np.asarray(thumbnail(np.zeros((100, 100), np.float32), {"heart": m}, side=50))
    assert t.shape == (50, 50, 3)
    assert (t.reshape(-1, 3) == (255, 200, 0)).all(axis=1).sum() > 20  # heart outline in yellow
    assert (t[25, 25] == 0).all()  # inside stays the image


def test_format_row():
    out = format_row({"a": float("nan"), "b": None, "c": True, "d": 0.123456789, "e": "x", "f": 3})
    assert out == {"a": "", "b": "", "c": "True", "d": "0.1235", "e": "x", "f": "3"}
    # numpy scalars as assess returns them; large values in 4 significant digits
    out = format_row({"a": np.float64("nan"), "b": np.bool_(False), "c": np.float64(0.5), "d": 123456.7,
                      "e": -98765.4, "f": 9999.96, "g": 0.0})
    assert out == {"a": "", "b": "False", "c": "0.5", "d": "1.235e+05", "e": "-9.877e+04", "f": "9999.96",
                   "g": "0.0"}
    assert format_row({"d": 0.123456789}, decimals=2) == {"d": "0.12"}


def test_report_keeps_only_the_worst_cards(tmp_path):
    m = np.zeros((32, 32), bool)
    m[8:24, 8:24] = True
    rw = ReportWriter(tmp_path / "rep", max_cards=2)
    for i, rca in enumerate([0.9, 0.2, 0.8, 0.5, 0.95]):
        rw.add(f"img{i}", _row(rca >= 0.7, rca, "" if rca >= 0.7 else "rca_low"), None, {"heart": m})
    page = rw.close().read_text()
    assert sorted(p.name for p in (tmp_path / "rep" / "thumbs").iterdir()) == ["img1.png", "img3.png"]
    assert page.index(">img1 ") < page.index(">img3 ") and ">img0 " not in page
    assert "<b>5</b> images" in page and "worst of 5" in page


def test_report_shows_predicted_dice_and_a_summary_per_source_folder(tmp_path):
    m = np.zeros((32, 32), bool)
    m[8:24, 8:24] = True
    rw = ReportWriter(tmp_path / "rep")
    for i, (folder, pred, ok) in enumerate([("hospA", 0.95, True), ("hospA", 0.62, False), ("hospB", 0.91, True),
                                            ("hospB", 0.97, True), ("hospB", 0.99, False)]):
        r = _row(ok, float("nan"), "" if ok else ("dice_low(0.62)" if pred < 0.9 else "lungs_swapped"))
        r.update({"Predicted Dice": pred, "pred_dice_lungR": pred, "qc_notes": "ctr(0.90)" if i == 2 else ""})
        rw.add(f"img{i}", r, None, {"heart": m}, path=f"/data/{folder}/img{i}.png")
    page = rw.close().read_text()
    # worst first by predicted Dice among the flagged, then the passed
    assert page.index(">img1 ") < page.index(">img4 ") < page.index(">img2 ") < page.index(">img0 ")
    assert "pred. Dice</td><td>0.620" in page and "notes: ctr(0.90)" in page
    assert "Predicted Dice: median <b>0.950</b>, min 0.620" in page
    assert "<tr><td>hospA</td><td>2</td><td>1</td><td>1</td><td>0.785</td><td>dice_low (1)</td></tr>" in page
    assert "<tr><td>hospB</td><td>3</td><td>2</td><td>1</td><td>0.970</td><td>lungs_swapped (1)</td></tr>" in page


def test_folder_summary_orders_tied_reasons_by_name_whatever_the_hash_seed():
    """Reasons of equal count come out by name: set iteration follows PYTHONHASHSEED, so a page
    built by another process must not reorder them (byte-identical reports)."""
    import subprocess
    import sys

    code = ("from anatomix.qc.report import folder_table; print(folder_table([{'folder': 'h', 'qc_pass': False, "
            "'qc_reasons': 'lungs_swapped;dice_low(0.5);holes(2);rotated'}, {'folder': 'k', 'qc_pass': True}]))")
    pages = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}
    assert len(pages) == 1
    assert "dice_low (1), holes (1), lungs_swapped (1)" in pages.pop()
