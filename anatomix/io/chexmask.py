"""CheXmask codec: run-length encoded masks, the ``Landmarks`` column, and CheXmask-style CSV files.

Layout of a CheXmask CSV (one row per image, original frame of the image):

* an image id column: ``image_id`` (VinDr-CXR, and what anatomix writes), ``dicom_id``
  (MIMIC-CXR), ``ImageID`` (PadChest, CANDID-PTX), ``Image Index`` (ChestX-ray8) or ``Path``
  (CheXpert); the first of these in that order names the image (anatomix writes ``image_id``);
* ``Height`` and ``Width`` of the image in pixels;
* ``Landmarks`` (optional): (x, y) contour nodes, in any of the three encodings found in the
  CheXmask files (see :func:`parse_landmarks`);
* one RLE column per structure, named by its label: ``Right Lung``, ``Left Lung``, ``Heart``
  (and ``Right Clavicle``, ``Left Clavicle`` when present); an empty cell is an empty mask;
* any other column (QC columns such as ``Dice RCA (Mean)``, ``path``) is kept as text.

RLE: the (H, W) binary mask is flattened row-major (C order) and written as
``"start length start length ..."`` with 1-based starts.

Files ending in ``.gz`` are read and written through gzip. Rows are streamed, so files of any size
can be read with :func:`iter_chexmask_csv`.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from anatomix.anatomy import STRUCTURE_BY_KEY, STRUCTURE_KEYS, STRUCTURES
from anatomix.errors import ReadError
from anatomix.limits import MAX_PIXELS

PathLike = str | os.PathLike

ID_COLUMNS: tuple[str, ...] = ("image_id", "dicom_id", "ImageID", "Image Index", "Path")
"""Image id column names of the CheXmask files, in order of preference."""
LANDMARKS_COLUMN = "Landmarks"
LANDMARK_DECIMALS = 3
"""Decimals kept by :func:`format_landmarks`: 1/1000 pixel, far below any annotation's precision."""
"""Structure keys whose mask columns are always written."""

LABEL_TO_KEY: dict[str, str] = {s.label: s.key for s in STRUCTURES}
_MASK_LABELS: tuple[str, ...] = tuple(s.label for s in STRUCTURES)
_RLE_SYNTAX = re.compile(r"\d+\s+\d+(\s+\d+\s+\d+)*")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_LANDMARK_CHARS = re.compile(r"[\s\[\],0-9eE+\-.]*")
_INNERMOST = re.compile(r"\[([^\[\]]*)\]")


# -- RLE ---------------------------------------------------------------------------------------
def rle_encode(mask: np.ndarray) -> str:
    """Run-length encode a binary mask the CheXmask way.

    Args:
        mask: (H, W) binary mask (any dtype; nonzero is foreground).

    Returns:
        ``"start length ..."`` over the row-major flattened mask with 1-based starts;
        ``""`` for an empty mask.
    """
    flat = np.asarray(mask).astype(bool, copy=False).ravel()
    edges = np.flatnonzero(np.diff(flat, prepend=False, append=False))  # run starts and ends, 0-based
    runs = edges.reshape(-1, 2)
    runs[:, 1] -= runs[:, 0]
    runs[:, 0] += 1
    return " ".join(map(str, runs.ravel().tolist()))


def rle_decode(rle: str | float | None, height: int, width: int) -> np.ndarray:
    """Decode a CheXmask RLE string into a mask.

    Args:
        rle: ``"start length ..."`` with 1-based starts over the row-major flattened mask;
            ``""``, ``None`` or NaN (an empty cell read by pandas) give an empty mask.
        height, width: mask shape.

    Returns:
        (height, width) bool mask.

    Raises:
        ValueError: if the string is not pairs of integers or a run leaves the mask.
    """
    size = int(height) * int(width)
    if not isinstance(rle, str) or not rle.strip():
        return np.zeros((height, width), dtype=bool)
    runs = np.array(rle.split(), dtype=np.int64)
    if runs.size % 2:
        raise ValueError(f"RLE has an odd number of values ({runs.size})")
    starts, lengths = runs[0::2] - 1, runs[1::2]
    ends = starts + lengths
    if starts.min() < 0 or lengths.min() < 0 or ends.max() > size:
        raise ValueError(f"RLE run outside a {height}x{width} mask")
    delta = np.zeros(size + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    return (np.cumsum(delta[:-1], dtype=np.int32) > 0).reshape(height, width)


# -- Landmarks column --------------------------------------------------------------------------
def parse_landmarks(value: str | Sequence[float] | np.ndarray) -> np.ndarray:
    """Read a CheXmask ``Landmarks`` cell.

    Accepts the three encodings found in the CheXmask files, and arrays:

    * a JSON array of pairs: ``"[[12.5, 34], [56, 78]]"`` (what :func:`format_landmarks` writes);
    * comma-joined numbers: ``"12,34,56,78"``;
    * a numpy repr, with or without commas, on one or several lines:
      ``"[[ 12  34]\\n [ 56  78]]"``, ``"[[12.5, 34.], [56., 78.]]"``.

    Args:
        value: the cell text, or anything array-like of 2N numbers.

    Returns:
        (N, 2) float64 (x, y), in the frame of the file (the original image for anatomix files).

    Raises:
        ValueError: if the text is not one of these encodings, is a truncated numpy repr
            (``...``), has a bracket group that is not one pair, or holds an odd count of
            numbers or none.
    """
    if isinstance(value, str):
        text = value.strip()
        if "..." in text or not _LANDMARK_CHARS.fullmatch(text):
            raise ValueError(f"not a landmark list: {_shorten(value)}")
        pairs = _INNERMOST.findall(text)
        if len(pairs) > 1 and any(len(_NUMBER.findall(p)) != 2 for p in pairs):
            raise ValueError(f"every [...] must hold one (x, y) pair: {_shorten(value)}")
        numbers = np.array([float(m) for m in _NUMBER.findall(text)])
    else:
        numbers = np.asarray(value, dtype=np.float64).ravel()
    if numbers.size == 0 or numbers.size % 2:
        raise ValueError(f"expected an even, nonzero count of numbers, got {numbers.size}")
    return numbers.reshape(-1, 2)


def format_landmarks(landmarks: np.ndarray) -> str:
    """Write landmarks as a compact JSON array of [x, y] pairs, rounded to 3 decimals.

    Reading the text back with :func:`parse_landmarks` gives exactly
    ``np.round(landmarks, LANDMARK_DECIMALS)``.

    Args:
        landmarks: (N, 2) (x, y), finite.

    Returns:
        ``"[[x0,y0],[x1,y1],...]"``.

    Raises:
        ValueError: if the shape is not (N, 2) or a value is not finite.
    """
    xy = np.asarray(landmarks, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"landmarks must be (N, 2), got {xy.shape}")
    if not np.all(np.isfinite(xy)):
        raise ValueError("landmarks must be finite")
    return json.dumps(np.round(xy, LANDMARK_DECIMALS).tolist(), separators=(",", ":"))


def _shorten(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# -- rows --------------------------------------------------------------------------------------
@dataclass(eq=False)
class ChexmaskRow:
    """One row of a CheXmask CSV, all in the original frame of the image.

    Attributes:
        image_id: the image id.
        height, width: image shape in pixels.
        landmarks: (N, 2) float (x, y) contour nodes, or None.
        rles: {structure label (``"Right Lung"``): RLE string}; ``""`` is an empty mask.
        extra: every other column, as text ({column: value}).
    """

    image_id: str
    height: int
    width: int
    landmarks: np.ndarray | None = None
    rles: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_masks(cls, image_id: str, masks: Mapping[str, np.ndarray],
                   landmarks: np.ndarray | None = None,
                   extra: Mapping[str, str] | None = None) -> ChexmaskRow:
        """Encode the masks of one image into a row.

        Args:
            image_id: the image id.
            masks: {structure key (``lungR``): (H, W) binary mask}, original frame; at least one.
            landmarks: (N, 2) (x, y) in the original frame, or None.
            extra: other columns.

        Raises:
            ValueError: if there are no masks, a key is unknown or the shapes differ.
        """
        shapes = {np.shape(m) for m in masks.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"need 2-D masks of one shape, got {sorted(shapes)}")
        unknown = set(masks) - set(STRUCTURE_BY_KEY)
        if unknown:
            raise ValueError(f"unknown structure keys {sorted(unknown)}; valid: {list(STRUCTURE_BY_KEY)}")
        (height, width), = shapes
        rles = {STRUCTURE_BY_KEY[k].label: rle_encode(m) for k, m in masks.items()}
        return cls(image_id, height, width, landmarks, rles, dict(extra or {}))

    def masks(self) -> dict[str, np.ndarray]:
        """Decode the RLE columns into {structure key (``lungR``): (height, width) bool mask}."""
        return {LABEL_TO_KEY[label]: rle_decode(rle, self.height, self.width) for label, rle in self.rles.items()}


# -- reading -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """Which column of a CheXmask header plays which part."""

    id_column: str
    mask_columns: tuple[str, ...]
    has_landmarks: bool
    extra_columns: tuple[str, ...]
    max_pixels: int = MAX_PIXELS

    @classmethod
    def from_header(cls, header: Sequence[str] | None, max_pixels: int = MAX_PIXELS) -> _Layout:
        if not header:
            raise ValueError("empty file (no header)")
        id_column = next((c for c in ID_COLUMNS if c in header), None)
        missing = [c for c in ("Height", "Width") if c not in header]
        if id_column is None:
            missing.insert(0, " or ".join(ID_COLUMNS))
        if missing:
            raise ValueError(f"missing column(s): {', '.join(missing)}")
        masks = tuple(c for c in _MASK_LABELS if c in header)
        has_landmarks = LANDMARKS_COLUMN in header
        if not masks and not has_landmarks:
            raise ValueError(f"no {LANDMARKS_COLUMN} and no mask column ({', '.join(_MASK_LABELS)})")
        taken = {id_column, "Height", "Width", LANDMARKS_COLUMN, *masks}
        return cls(id_column, masks, has_landmarks, tuple(c for c in header if c not in taken), max_pixels)

    def parse(self, record: Mapping[str | None, str | None]) -> ChexmaskRow:
        """Turn one csv.DictReader record into a row (ValueError when malformed)."""
        if None in record or None in record.values():
            raise ValueError("wrong number of fields")
        if not record[self.id_column].strip():
            raise ValueError(f"empty {self.id_column}")
        landmarks = record[LANDMARKS_COLUMN].strip() if self.has_landmarks else ""
        rles = {c: _clean_rle(record[c]) for c in self.mask_columns}
        height, width = _parse_size(record["Height"], "Height"), _parse_size(record["Width"], "Width")
        if height * width > self.max_pixels:
            raise ValueError(f"Height x Width = {height}x{width} is over the limit of {self.max_pixels} pixels")
        return ChexmaskRow(
            image_id=record[self.id_column],
            height=height,
            width=width,
            landmarks=parse_landmarks(landmarks) if landmarks and landmarks.lower() != "nan" else None,
            rles=rles,
            extra={c: record[c] for c in self.extra_columns},
        )


def _clean_rle(text: str) -> str:
    text = text.strip()
    if not text or text.lower() == "nan":
        return ""
    if not _RLE_SYNTAX.fullmatch(text):
        raise ValueError(f"malformed RLE {_shorten(text)}")
    return text


def _parse_size(text: str, name: str) -> int:
    value = float(text)
    if not value.is_integer() or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {text!r}")
    return int(value)


def _open_text(path: Path, mode: str) -> IO[str]:
    """Open a .csv or .csv.gz file as text for the csv module ("r", "w", "x" or "a")."""
    encoding = "utf-8-sig" if mode == "r" else "utf-8"
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding=encoding, newline="")
    return open(path, mode, encoding=encoding, newline="")


def _allow_large_fields() -> None:
    # RLE cells of original-resolution masks can exceed the csv module's 128 KiB default
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))


_READ_ERRORS = (OSError, EOFError, csv.Error, ValueError)  # ValueError covers UnicodeDecodeError


def _open_rows(path: Path, max_pixels: int = MAX_PIXELS) -> tuple[tuple[str, ...], Iterator[ChexmaskRow]]:
    """Open a CheXmask CSV, check its header; return (header, iterator of rows)."""
    _allow_large_fields()
    try:
        stream = _open_text(path, "r")
    except OSError as e:
        raise ReadError(path, e.strerror or str(e)) from e
    try:
        reader = csv.DictReader(stream)
        layout = _Layout.from_header(reader.fieldnames, max_pixels)
    except _READ_ERRORS as e:
        stream.close()
        raise ReadError(path, f"header: {e}") from e
    return tuple(reader.fieldnames), _iter_rows(path, stream, reader, layout)


def _iter_rows(path: Path, stream: IO[str], reader: csv.DictReader, layout: _Layout) -> Iterator[ChexmaskRow]:
    with stream:
        for number in itertools.count(1):
            try:
                record = next(reader, None)
                if record is None:
                    return
                row = layout.parse(record)
            except _READ_ERRORS as e:
                raise ReadError(path, f"row {number} (line {reader.line_num}): {e}") from e
            yield row


def iter_chexmask_csv(path: PathLike, max_pixels: int = MAX_PIXELS) -> Iterator[ChexmaskRow]:
    """Stream the rows of a CheXmask CSV (``.csv`` or ``.csv.gz``).

    The file is opened and its header checked at once; rows are parsed as they are iterated.

    Args:
        path: the file.
        max_pixels: largest ``Height`` x ``Width`` accepted (decoding a row's masks allocates it).

    Returns:
        An iterator of :class:`ChexmaskRow`.

    Raises:
        ReadError: if the file cannot be opened, lacks the required columns (an id column,
            ``Height``, ``Width``, and ``Landmarks`` or a mask column), or, while iterating, a row
            is malformed or larger than ``max_pixels`` (the message names the row number,
            1 = first row after the header).
    """
    return _open_rows(Path(path), max_pixels)[1]


def read_chexmask_csv(path: PathLike, max_pixels: int = MAX_PIXELS) -> list[ChexmaskRow]:
    """Read every row of a CheXmask CSV (``.csv`` or ``.csv.gz``); see :func:`iter_chexmask_csv`."""
    return list(iter_chexmask_csv(path, max_pixels))


# -- writing -----------------------------------------------------------------------------------
def chexmask_header(structures: Iterable[str] = STRUCTURE_KEYS, extra_columns: Iterable[str] = ()) -> list[str]:
    """The columns anatomix writes.

    ``image_id``, ``path`` (if among the extra columns), ``Height``, ``Width``, ``Landmarks``, the
    mask columns in template order, then the other extra columns in the order given.

    Args:
        structures: structure keys that get a mask column (``lungR`` ...).
        extra_columns: other columns.

    Raises:
        ValueError: if a structure key is unknown or an extra column is a CheXmask column.
    """
    keys = set(structures)
    unknown = keys - set(STRUCTURE_BY_KEY)
    if unknown:
        raise ValueError(f"unknown structure keys {sorted(unknown)}; valid: {list(STRUCTURE_BY_KEY)}")
    extra = list(dict.fromkeys(extra_columns))
    reserved = {"image_id", "Height", "Width", LANDMARKS_COLUMN, *_MASK_LABELS}.intersection(extra)
    if reserved:
        raise ValueError(f"extra columns {sorted(reserved)} clash with the CheXmask layout")
    head = ["image_id"] + (["path"] if "path" in extra else []) + ["Height", "Width", LANDMARKS_COLUMN]
    masks = [s.label for s in STRUCTURES if s.key in keys]
    return head + masks + [c for c in extra if c != "path"]


def _record(row: ChexmaskRow, header: Sequence[str]) -> list[str]:
    """The cells of one row under ``header`` (ValueError if the row has cells the header lacks)."""
    cells = {"image_id": str(row.image_id), "Height": str(int(row.height)), "Width": str(int(row.width)),
             LANDMARKS_COLUMN: "" if row.landmarks is None else format_landmarks(row.landmarks)}
    cells.update(row.rles)
    cells.update({k: str(v) for k, v in row.extra.items()})
    unknown = set(cells) - set(header)
    if unknown:
        raise ValueError(f"row {row.image_id!r} has columns that the file lacks: {sorted(unknown)}")
    return [cells.get(c, "") for c in header]


def write_chexmask_csv(path: PathLike, rows: Iterable[ChexmaskRow]) -> None:
    """Write rows to a CheXmask CSV (``.csv`` or ``.csv.gz``) atomically.

    Mask columns are ``Right Lung``, ``Left Lung``, ``Heart`` plus any other structure that a row
    has; extra columns are the union of the rows' extra columns in first-seen order (see
    :func:`chexmask_header`). Missing cells are written empty. The file is written to a temporary
    file in the same folder, then moved into place, so readers never see a partial file.

    Args:
        path: destination.
        rows: the rows (landmarks and masks in each image's original frame).
    """
    path = Path(path)
    rows = list(rows)
    keys = set(STRUCTURE_KEYS) | {LABEL_TO_KEY[label] for r in rows for label in r.rles if label in LABEL_TO_KEY}
    header = chexmask_header(keys, [c for r in rows for c in r.extra])
    tmp = path.with_name(f".{uuid.uuid4().hex}.{path.name}")  # same folder, same suffix (.gz)
    try:
        with _open_text(tmp, "x") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(_record(r, header) for r in rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
