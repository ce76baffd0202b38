"""Static HTML QC report: thumbnails with contours, worst first, QC figures per image.

The report is one ``index.html`` plus a ``thumbs/`` folder of PNGs next to it, referenced by
relative paths, so it opens straight from the output folder in any browser (no server, no
script, no network). Thumbnails are written as images arrive (:meth:`ReportWriter.add`), so a
batch of any size never holds more than one image in memory; the page is written by
:meth:`ReportWriter.close`.

Order: failed masks first, then by ``Predicted Dice`` ascending (``Dice RCA (Mean)`` when there is
no predicted Dice; images without either last within their group, by number of reasons).

The summary counts every image, overall and per source folder (the folder holding each image,
since a batch often mixes hospitals): images, passed, flagged, median predicted Dice, the most
frequent reasons.
"""

from __future__ import annotations

import heapq
import html
import math
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import numpy as np

COLOURS = {"lungR": (255, 70, 70), "lungL": (60, 150, 255), "heart": (255, 200, 0)}
THUMB_SIDE = 256
SHOWN = [("Predicted Dice", "pred. Dice"), ("pred_dice_lungR", "pred. lungR"), ("pred_dice_lungL", "pred. lungL"),
         ("pred_dice_heart", "pred. heart"), ("agree_min", "agreement"), ("Dice RCA (Mean)", "RCA mean"), ("Dice RCA (Max)", "RCA max"), ("rca_similarity", "similarity"),
         ("ctr", "CTR"), ("shape_mahalanobis", "shape d"), ("heart_lung_contrast", "contrast"),
         ("n_components", "components"), ("n_holes", "holes"), ("orientation_gain", "rot. gain"), ("flip_gain", "flip gain"),
         ("node_std_mean", "node std")]


def thumbnail(pixels: Optional[np.ndarray], masks: Mapping[str, np.ndarray], side: int = THUMB_SIDE):
    """RGB PIL image of (H, W) ``pixels`` (or black) with 2-pixel mask contours, max side ``side``."""
    from PIL import Image
    from scipy import ndimage

    shape = next(iter(masks.values())).shape if masks else (pixels.shape if pixels is not None else (side, side))
    scale = side / max(shape)
    size = (max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale)))
    if pixels is not None:
        p = np.asarray(pixels, np.float32)
        lo, hi = np.percentile(p, [0.5, 99.5])
        p = np.clip((p - lo) / max(hi - lo, 1e-6), 0, 1)
        base = Image.fromarray((p * 255).astype(np.uint8)).resize(size, Image.BILINEAR).convert("RGB")
    else:
        base = Image.new("RGB", size)
    rgb = np.asarray(base).copy()
    for k, m in masks.items():
        small = np.asarray(Image.fromarray(np.asarray(m, np.uint8) * 255).resize(size, Image.BILINEAR)) >= 128
        edge = small & ~ndimage.binary_erosion(small, iterations=2)
        rgb[edge] = COLOURS.get(k, (255, 255, 255))
    return Image.fromarray(rgb)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120] or "image"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
        return "&ndash;"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return html.escape(str(v))


def _neg(key):
    """Order-reversing transform of a :func:`_sort_key` tuple (for a max-heap on heapq)."""
    return tuple(-float(v) for v in key)


def _estimate(row: Mapping[str, object]) -> Optional[float]:
    """The row's Dice estimate: ``Predicted Dice``, else ``Dice RCA (Mean)``, else None."""
    for c in ("Predicted Dice", "Dice RCA (Mean)"):
        v = row.get(c)
        if isinstance(v, (float, int)) and not math.isnan(float(v)):
            return float(v)
    return None


def _sort_key(row: Mapping[str, object]):
    est = _estimate(row)
    n_reasons = len([r for r in str(row.get("qc_reasons") or "").split(";") if r])
    return (bool(row.get("qc_pass")), 0 if est is not None else 1, est if est is not None else -n_reasons)


def source_folder(path: Optional[str]) -> str:
    """The folder an image came from (its parent's name), or ``(no path)``."""
    return Path(path).parent.name or "." if path else "(no path)"


def _reason_codes(row: Mapping[str, object]) -> List[str]:
    return [x.split("(")[0] for x in str(row.get("qc_reasons") or "").split(";") if x]


class ReportWriter:
    """Collect QC rows and thumbnails; write ``<out>/index.html`` on :meth:`close`.

    Args:
        out: the report folder (created).
        title: page title.
        max_cards: show at most this many images (the worst ones); the summary still counts all.
            Thumbnails of images pushed out by worse ones are deleted as the batch runs, so a
            CheXmask-sized batch leaves a report of bounded size.
    """

    def __init__(self, out: Path | str, title: str = "anatomix QC report", max_cards: Optional[int] = 1000):
        self.out = Path(out)
        (self.out / "thumbs").mkdir(parents=True, exist_ok=True)
        self.title = title
        self.max_cards = max_cards
        self.rows: List[Dict[str, object]] = []
        self._heap: List = []  # (negated sort key, counter, row) of the shown cards: best on top
        self._names: Counter = Counter()

    def add(self, image_id: str, row: Mapping[str, object], pixels: Optional[np.ndarray] = None,
            masks: Optional[Mapping[str, np.ndarray]] = None, path: Optional[str] = None, thumb=None) -> None:
        """Add one image: its QC row (``QC_COLUMNS``), and the image and masks for the thumbnail
        (or the :func:`thumbnail` itself, ``thumb``, made where the image was checked)."""
        name = _safe(image_id)
        self._names[name] += 1
        if self._names[name] > 1:
            name = f"{name}_{self._names[name]}"
        if thumb is None and (masks or pixels is not None):
            thumb = thumbnail(pixels, masks or {})
        if thumb is not None:
            thumb.save(self.out / f"thumbs/{name}.png")
            thumb = f"thumbs/{name}.png"
        entry = {"image_id": image_id, "path": path or "", "_thumb": thumb, **row}
        self.rows.append({c: entry.get(c) for c in ("qc_pass", "qc_reasons", "Predicted Dice", "Dice RCA (Mean)")}
                         | {"folder": source_folder(path)})
        heapq.heappush(self._heap, (_neg(_sort_key(entry)), len(self.rows), entry))
        if self.max_cards is not None and len(self._heap) > self.max_cards:
            dropped = heapq.heappop(self._heap)[2]
            if dropped["_thumb"]:
                (self.out / dropped["_thumb"]).unlink(missing_ok=True)

    def close(self) -> Path:
        """Write ``index.html`` (worst first) and return its path."""
        rows = self.rows
        cards = sorted((e for _, _, e in self._heap), key=_sort_key)
        n = len(rows)
        n_fail = sum(1 for r in rows if not r.get("qc_pass"))
        reasons = Counter()
        for r in rows:
            reasons.update(set(_reason_codes(r)))
        est = np.array([v for v in map(_estimate, rows) if v is not None], dtype=float)
        parts = [f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>
<style>
body{{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:16px;background:#f4f4f4;color:#222}}
h1{{margin:0 0 4px 0;font-size:22px}} .sum{{margin:6px 0 14px 0}}
.sum span{{display:inline-block;margin-right:18px}}
.grid{{display:flex;flex-wrap:wrap;gap:10px}}
.card{{background:#fff;border-radius:6px;padding:8px;width:270px;box-shadow:0 1px 3px #0002;border-top:5px solid #2a2}}
.card.fail{{border-top-color:#d22}}
.card img{{width:256px;height:auto;display:block;margin:auto;background:#000}}
.id{{font-weight:600;font-size:13px;margin:4px 0;word-break:break-all}}
.badge{{font-size:11px;font-weight:700;padding:1px 6px;border-radius:3px;color:#fff;background:#2a2}}
.fail .badge{{background:#d22}}
.reasons{{color:#b00;font-size:12px;margin:3px 0;word-break:break-word}}
.notes{{color:#666;font-size:11px;margin:3px 0;word-break:break-word}}
table.fig{{font-size:11px;border-collapse:collapse;width:100%}} table.fig td{{padding:0 3px}}
table.fig td:nth-child(even){{text-align:right;font-variant-numeric:tabular-nums}}
.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}}
table.reasons-t{{border-collapse:collapse;font-size:13px}} table.reasons-t td{{padding:1px 8px;border-bottom:1px solid #ddd}}
</style></head><body>
<h1>{html.escape(self.title)}</h1>
<div class="sum"><span><b>{n}</b> images</span><span style="color:#2a2"><b>{n - n_fail}</b> pass</span>
<span style="color:#d22"><b>{n_fail}</b> flagged</span>"""]
        if est.size:
            parts.append(f"<span>Predicted Dice: median <b>{np.median(est):.3f}</b>, "
                         f"min {est.min():.3f}</span>")
        parts.append('<span class="legend">contours:' + "".join(
            f'<span style="background:rgb{c}"></span>{k}' for k, c in COLOURS.items()) + "</span></div>")
        if reasons:
            parts.append('<table class="reasons-t"><tr><td><b>reason</b></td><td><b>images</b></td></tr>'
                         + "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
                         + "</table><p style='font-size:12px'>A mask set passes when its predicted Dice is at "
                         "or above the bundled model's threshold and it has no hard failure (topology, swapped "
                         "sides, heart outside the thorax, rotated or mirrored film); see anatomix.qc.verdict. "
                         "Worst first.</p>")
        parts.append(folder_table(rows))
        if len(cards) < n:
            parts.append(f"<p><b>Showing the {len(cards)} worst of {n} images.</b></p>")
        parts.append('<div class="grid">')
        for r in cards:
            ok = bool(r.get("qc_pass"))
            img = (f'<img src="{html.escape(r["_thumb"])}" alt="{html.escape(str(r["image_id"]))}" loading="lazy">'
                   if r["_thumb"] else "<div style='height:60px'>no image</div>")
            cells = [f"<td>{lab}</td><td>{_fmt(r.get(c))}</td>" for c, lab in SHOWN]
            figs = "".join(f"<tr>{''.join(cells[i:i + 2])}</tr>" for i in range(0, len(cells), 2))
            reasons_txt = html.escape(str(r.get("qc_reasons") or "").replace(";", "; "))
            notes_txt = html.escape(str(r.get("qc_notes") or "").replace(";", "; "))
            parts.append(f'<div class="card{"" if ok else " fail"}">{img}'
                         f'<div class="id">{html.escape(str(r["image_id"]))} '
                         f'<span class="badge">{"PASS" if ok else "FLAG"}</span></div>'
                         f'<div class="reasons">{reasons_txt}</div>'
                         + (f'<div class="notes">notes: {notes_txt}</div>' if notes_txt else "") +
                         f'<table class="fig">{figs}</table></div>')
        parts.append("</div></body></html>\n")
        page = self.out / "index.html"
        page.write_text("\n".join(parts), encoding="utf-8")
        return page


def folder_table(rows: List[Mapping[str, object]]) -> str:
    """HTML table of the summary per source folder (rows hold ``folder``, ``qc_pass``,
    ``qc_reasons`` and the Dice estimates); empty when all images come from one folder."""
    by: Dict[str, List[Mapping[str, object]]] = {}
    for r in rows:
        by.setdefault(str(r.get("folder")), []).append(r)
    if len(by) < 2:
        return ""
    out = ['<h3 style="margin:12px 0 4px 0">Per source folder</h3><table class="reasons-t">'
           "<tr><td><b>folder</b></td><td><b>images</b></td><td><b>pass</b></td><td><b>flagged</b></td>"
           "<td><b>median pred. Dice</b></td><td><b>top reasons</b></td></tr>"]
    for folder in sorted(by):
        rs = by[folder]
        n_pass = sum(1 for r in rs if r.get("qc_pass"))
        est = [v for v in map(_estimate, rs) if v is not None]
        counts = Counter(c for r in rs for c in set(_reason_codes(r)))
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]  # ties by name, not by set order
        out.append(f"<tr><td>{html.escape(folder)}</td><td>{len(rs)}</td><td>{n_pass}</td><td>{len(rs) - n_pass}</td>"
                   f"<td>{_fmt(float(np.median(est))) if est else _fmt(None)}</td>"
                   f"<td>{html.escape(', '.join(f'{c} ({n})' for c, n in top))}</td></tr>")
    out.append("</table>")
    return "".join(out)
