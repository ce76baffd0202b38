"""The anomaly folder of the data pack (``cxr-anomaly``): one record per manifest row.

Layout (see the data pack's README)::

    cxr-anomaly/
      manifest.csv      id, source, source_repo, patient_id, split_upstream, orig_width,
                        orig_height, label (normal | abnormal), finding, notes
      zhanglab/ID.png   ZhangLab pediatric films (split_upstream train | test)
      external/ID.png   a few NIH / TBX11K / Shenzhen films (split_upstream external)

Example:
    >>> from anatomix.data.anomaly_pack import anomaly_cases
    >>> fit = anomaly_cases(data, source="zhanglab", split="train", label="normal")
    >>> test = anomaly_cases(data, source="zhanglab", split="test")
    >>> [c.path for c in test[:2]], [c.abnormal for c in test[:2]]
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from anatomix.errors import ReadError

PACK_FOLDER = "cxr-anomaly"
"""Name of the anomaly folder inside the data pack."""
LABELS = ("normal", "abnormal")
"""Values of the manifest's ``label`` column."""


@dataclass(frozen=True)
class AnomalyCase:
    """One radiograph of the anomaly pack.

    Attributes:
        id: the manifest ``id`` (the file stem).
        source: ``zhanglab``, ``nih``, ``tbx11k`` or ``shenzhen``.
        label: ``normal`` or ``abnormal``.
        finding: ``normal``, ``pneumonia_bacterial``, ``pneumonia_viral``, ``tuberculosis``, ...
        path: the image file.
        patient: the manifest ``patient_id`` (several films may share one).
        split: the upstream split (``split_upstream``: ``train``, ``test`` or ``external``).
        meta: the whole manifest row.
    """

    id: str
    source: str
    label: str
    finding: str
    path: Path
    patient: str
    split: str
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def abnormal(self) -> bool:
        """True for ``label == "abnormal"`` (the positive class of the metrics)."""
        return self.label == "abnormal"


def pack_folder(root: Path | str) -> Path:
    """The ``cxr-anomaly`` folder: ``root`` itself when it holds ``manifest.csv``, else ``root/cxr-anomaly``."""
    root = Path(root)
    return root if (root / "manifest.csv").is_file() else root / PACK_FOLDER


def anomaly_cases(root: Path | str, source: str | None = None, split: str | None = None,
                  label: str | None = None) -> list[AnomalyCase]:
    """The anomaly pack's cases, in manifest order, optionally filtered.

    Args:
        root: the data pack (``../shared/data``) or its ``cxr-anomaly`` folder.
        source: keep one source (``zhanglab``, ...).
        split: keep one upstream split (``train``, ``test``, ``external``).
        label: keep ``normal`` or ``abnormal`` cases.

    Image paths: ``zhanglab/<id>.png`` for ZhangLab cases, ``external/<id>.png`` for the others
    (whether the file exists is not checked).

    Raises:
        ReadError: the manifest is missing or lacks the columns above.
    """
    folder = pack_folder(root)
    manifest = folder / "manifest.csv"
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReadError(manifest, f"cannot read the anomaly pack manifest ({e})") from None
    needed = {"id", "source", "label", "finding", "patient_id", "split_upstream"}
    if rows and not needed <= set(rows[0]):
        raise ReadError(manifest, f"missing columns {sorted(needed - set(rows[0]))}")
    out = []
    for r in rows:
        if (source is not None and r["source"] != source) or (split is not None and r["split_upstream"] != split) \
                or (label is not None and r["label"] != label):
            continue
        sub = "zhanglab" if r["source"] == "zhanglab" else "external"
        out.append(AnomalyCase(id=r["id"], source=r["source"], label=r["label"], finding=r["finding"],
                               path=folder / sub / f"{r['id']}.png", patient=r["patient_id"],
                               split=r["split_upstream"], meta=dict(r)))
    return out


def model_frame_images(cases, image_size: int):
    """The cases' images in a detector's model frame: ``(N, S, S)`` float32 in [0, 1]
    (:func:`anatomix.anomaly.detector.preprocess` of each file as read)."""
    import numpy as np

    from anatomix.anomaly.detector import preprocess
    from anatomix.io import read_radiograph

    return np.stack([preprocess(read_radiograph(c.path).pixels, image_size)[0] for c in cases]).astype(np.float32)


def model_frame_masks(cases, image_size: int, batch_size: int = 64) -> list:
    """Masks of the default segmenter (:func:`anatomix.anomaly.run.segment_masks`) in the model
    frame, one ``{"lungR", "lungL", "heart"}`` dict per case. The cases are segmented in fixed
    chunks of ``batch_size`` (CPU convolutions round with batch composition), so the same list
    gives the same masks bit for bit."""
    from anatomix.anomaly.detector import preprocess
    from anatomix.anomaly.run import segment_masks
    from anatomix.anomaly.scoring import masks_to_model
    from anatomix.io import read_radiograph

    out = []
    for i in range(0, len(cases), batch_size):
        rads = [read_radiograph(c.path) for c in cases[i:i + batch_size]]
        for g, m in zip(rads, segment_masks(rads)):
            out.append(masks_to_model(m, preprocess(g.pixels, image_size)[1]))
    return out
