"""Inputs of the anomaly commands: images, masks (folder or segmenter) and labels.

Every failure of a single input becomes an :class:`~anatomix.batch.InputError` (a row of
``errors.csv``); nothing here stops a batch because of one bad file.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anatomix.anomaly.scoring import STRUCTURES
from anatomix.errors import ReadError
from anatomix.limits import MAX_PIXELS


def read_images(paths: Sequence[Path], ids: Sequence[str], max_pixels: int = MAX_PIXELS):
    """Read radiographs (each at most ``max_pixels``); returns (list of (image_id, Radiograph)),
    list of InputError)."""
    from anatomix.io import read_radiograph
    from anatomix.io.inputs import InputError

    ok, errors = [], []
    for p, i in zip(paths, ids):
        try:
            ok.append((i, read_radiograph(p, max_pixels)))
        except ReadError as e:
            errors.append(InputError(str(p), e.cause))
        except Exception as e:  # noqa: BLE001 - a reader bug must not stop the batch
            errors.append(InputError(str(p), f"{type(e).__name__}: {e}"))
    return ok, errors


def masks_from_dir(mask_dir: Path, image_id: str, shape: tuple[int, int]) -> dict[str, np.ndarray] | None:
    """``<mask_dir>/<image_id>_<structure>.png`` (0/1 or 0/255) -> bool masks, or None if absent.

    A mask file may declare no more pixels than the image has (``shape``).

    Raises:
        ReadError: a mask exists but cannot be read or has the wrong shape.
    """
    from anatomix.io.read import MIN_SIDE, read_mask

    out: dict[str, np.ndarray] = {}
    for s in STRUCTURES:
        p = Path(mask_dir) / f"{image_id}_{s}.png"
        if not p.is_file():
            continue
        a = read_mask(p, max(shape[0] * shape[1], MIN_SIDE * MIN_SIDE))
        if a.shape != tuple(shape):
            raise ReadError(p, f"mask is {a.shape[1]}x{a.shape[0]}, image is {shape[1]}x{shape[0]}")
        out[s] = a
    return out or None


def segment_masks(radiographs: Sequence) -> list[dict[str, np.ndarray]]:
    """Masks from the default segmenter (``refined``; AnatomixError naming the missing weights
    when it is not bundled)."""
    from anatomix.models import load_segmenter

    seg = load_segmenter()
    return [{k: v for k, v in s.masks.items() if k in STRUCTURES} for s in seg.predict(list(radiographs))]


_POS = {"1", "abnormal", "anomalous", "anomaly", "true", "yes", "pneumonia", "positive"}
_NEG = {"0", "normal", "false", "no", "negative"}


def read_labels(path: Path) -> dict[str, int]:
    """Labels from a manifest or a CSV: image id -> 1 (abnormal) / 0 (normal).

    The id column is the first of ``image_id``, ``id``, ``path`` (file stem) found; the label
    column the first of ``label``, ``abnormal``, ``anomalous``, ``y``, ``target``. Values:
    ``normal``/``abnormal``, ``0``/``1``, ``true``/``false`` and a few synonyms.
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReadError(path, f"cannot read labels ({e})") from None
    if not rows:
        raise ReadError(path, "no rows")
    cols = rows[0].keys()
    idc = next((c for c in ("image_id", "id", "path") if c in cols), None)
    lc = next((c for c in ("label", "abnormal", "anomalous", "y", "target") if c in cols), None)
    if idc is None or lc is None:
        raise ReadError(path, f"needs an id column (image_id/id/path) and a label column "
                              f"(label/abnormal/anomalous/y/target); has {list(cols)}")
    out: dict[str, int] = {}
    for r in rows:
        key = r[idc] if idc != "path" else Path(r[idc]).stem
        v = str(r[lc]).strip().lower()
        if v in _POS:
            out[key] = 1
        elif v in _NEG:
            out[key] = 0
    if not out:
        raise ReadError(path, f"no usable labels in column {lc!r}")
    return out
