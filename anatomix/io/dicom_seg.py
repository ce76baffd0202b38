"""DICOM Segmentation (SEG) objects of anatomix masks: written with highdicom, read with pydicom.

Writing (:func:`write_dicom_seg`, extra ``anatomix[dicom]``, which installs highdicom): one
binary SEG instance per source radiograph, at the source's Rows x Columns, one segment per
structure (frame ``i`` holds segment ``i + 1``), coded with SNOMED CT (category *Anatomical
structure*; type *Right lung*, *Left lung*, *Heart*, *Clavicle* with a laterality modifier),
with the algorithm (model name and version) identified in every segment. The SEG joins the
source's study (Study Instance UID, patient module copied) and references the source image by
its SOP Class and SOP Instance UID (Referenced Series Sequence and each frame's Derivation Image
Sequence). The SEG's own UIDs are derived from the source SOP Instance UID, the algorithm and
the mask contents, so rewriting the same result gives the same UIDs.

Geometry: a projection radiograph has no frame of reference; the SEG shares the source's pixel
grid (*Spatial Locations Preserved*: YES) and carries **no Pixel Measures** (the spacing is the
source's). highdicom copies a source's ``PixelSpacing`` into a Pixel Measures Sequence without
``SliceThickness``; that is valid DICOM, but highdicom 0.28's own reader (``segread``) refuses it,
so it is left out here rather than inventing a slice thickness.

Reading (:func:`read_dicom_seg`) needs pydicom only: frames are mapped to segments through
each frame's Segment Identification Sequence (per-frame functional groups, or the shared group
for a one-segment SEG), segments to anatomix structure keys through their SNOMED CT codes (and
their labels as a fallback).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anatomix.errors import AnatomixError, ReadError
from anatomix.io.inputs import has_dicom_marker
from anatomix.limits import MAX_PIXELS

PathLike = str | os.PathLike

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
"""Segmentation Storage."""
SERIES_NUMBER = 4242
"""Series Number of the SEG series anatomix writes (Type 1: some number is required)."""
INSTALL_HINT = "DICOM-SEG output needs highdicom: pip install 'anatomix[dicom]'"

# SNOMED CT codes: (code value, meaning); clavicles add a laterality modifier
_SCT = "SCT"
_ANATOMICAL_STRUCTURE = ("91723000", "Anatomical structure")
STRUCTURE_CODES: dict[str, tuple[str, str]] = {
    "lungR": ("3341006", "Right lung"),
    "lungL": ("44029006", "Left lung"),
    "heart": ("80891009", "Heart"),
    "clavR": ("51299004", "Clavicle"),
    "clavL": ("51299004", "Clavicle"),
}
"""Segmented Property Type code of every structure key (SNOMED CT)."""
LATERALITY: dict[str, tuple[str, str]] = {"clavR": ("24028007", "Right"), "clavL": ("7771000", "Left")}
"""Segmented Property Type Modifier of the structures whose code has no side."""
_DISPLAY_RGB = {"lungR": (230, 80, 80), "lungL": (80, 130, 230), "heart": (240, 200, 60),
                "clavR": (90, 200, 120), "clavL": (200, 100, 220)}

# type-2 attributes of the patient and study modules that highdicom copies from the source;
# a source without them gets them empty in the SEG (what type 2 allows), never invented values
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "ReferringPhysicianName", "AccessionNumber", "StudyID")
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def have_highdicom() -> bool:
    """Is the writer's optional dependency installed?"""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def require_highdicom() -> None:
    """Raise :class:`AnatomixError` with the install hint when highdicom is missing."""
    if not have_highdicom():
        raise AnatomixError(INSTALL_HINT)


class NotASegSource(Exception):
    """The source cannot be referenced by a SEG (not DICOM, no UIDs): the reason, for a note."""


def source_header(path: PathLike):
    """The source radiograph's DICOM header (no pixel data), checked for what a SEG references.

    Raises:
        NotASegSource: not a DICOM file, or it lacks a UID the SEG must reference.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError) as e:
        raise NotASegSource(f"not a DICOM source, no DICOM-SEG written ({type(e).__name__})") from None
    missing = [k for k in _REQUIRED_UIDS if not str(ds.get(k, "") or "").strip()]
    if missing:
        raise NotASegSource(f"DICOM source lacks {', '.join(missing)}: no DICOM-SEG written")
    return ds


def _uid(*parts: Any) -> str:
    """A ``2.25.<128-bit integer>`` UID (the UUID form) hashed from ``parts``: deterministic."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]
    return f"2.25.{int(digest, 16)}"


def _codes(key: str):
    import highdicom as hd

    code, meaning = STRUCTURE_CODES[key]
    return hd.sr.CodedConcept(code, _SCT, meaning)


def write_dicom_seg(path: PathLike, masks: Mapping[str, np.ndarray], source: PathLike, *,
                    algorithm: str, version: str, labels: Mapping[str, str] | None = None,
                    header=None) -> Path:
    """Write one binary DICOM-SEG of ``masks`` that references the DICOM radiograph ``source``.

    Args:
        path: the SEG file to write (atomically).
        masks: {structure key: (Rows, Columns) bool} in the source's pixel grid; one segment each,
            numbered in this order from 1. Keys must be in :data:`STRUCTURE_CODES`.
        source: the source DICOM file (its header is read again, pixel data are not).
        algorithm: algorithm name (the model: ``anatomix graph`` ...).
        version: algorithm version (anatomix version and the weights' hash).
        labels: {key: segment label} (default: the CheXmask labels, ``Right Lung`` ...).
        header: the source header when the caller has read it (:func:`source_header`).

    Returns:
        ``path``.

    Raises:
        NotASegSource: the source is not a DICOM that a SEG can reference (caller notes it).
        AnatomixError: highdicom is missing; a mask of the wrong shape or an unknown key.
    """
    require_highdicom()
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from anatomix.anatomy import STRUCTURE_BY_KEY
    from anatomix.io.atomic import atomic_write

    ds = header if header is not None else source_header(source)
    rows, cols = int(ds.Rows), int(ds.Columns)
    keys = list(masks)
    unknown = [k for k in keys if k not in STRUCTURE_CODES]
    if unknown or not keys:
        raise AnatomixError(f"no DICOM-SEG code for structures {unknown or '(none)'}")
    stack = np.stack([np.asarray(masks[k], dtype=bool) for k in keys])
    if stack.shape[1:] != (rows, cols):
        raise AnatomixError(f"masks are {stack.shape[1:]}, the DICOM source is {rows}x{cols}")

    src = ds.copy()
    for k in _TYPE2_COPIED:
        if k not in src:
            setattr(src, k, "")
    for k in ("PixelSpacing",):  # see the module docstring: no Pixel Measures for projections
        if k in src:
            del src[k]

    family = codes.cid7162.ArtificialIntelligence
    alg = hd.AlgorithmIdentificationSequence(name=algorithm[:64], family=family, version=version[:64])
    descriptions = []
    for i, k in enumerate(keys, start=1):
        label = (labels or {}).get(k) or STRUCTURE_BY_KEY[k].label
        d = hd.seg.SegmentDescription(
            segment_number=i, segment_label=label[:64],
            segmented_property_category=hd.sr.CodedConcept(_ANATOMICAL_STRUCTURE[0], _SCT, _ANATOMICAL_STRUCTURE[1]),
            segmented_property_type=_codes(k), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=alg, tracking_id=f"{k}", tracking_uid=_uid(ds.SOPInstanceUID, k, "track"),
            display_color=hd.color.CIELabColor.from_rgb(*_DISPLAY_RGB[k]) if hasattr(hd.color.CIELabColor, "from_rgb")
            else None)
        if k in LATERALITY:
            d.SegmentedPropertyTypeModifierCodeSequence = [hd.sr.CodedConcept(LATERALITY[k][0], _SCT, LATERALITY[k][1])]
        descriptions.append(d)

    digest = hashlib.sha256(np.packbits(stack).tobytes()).hexdigest()[:16]
    seed = (ds.SOPInstanceUID, algorithm, version, digest)
    seg = hd.seg.Segmentation(
        source_images=[src], pixel_array=np.moveaxis(stack, 0, -1)[None].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=_uid(*seed, "series"), series_number=SERIES_NUMBER,
        sop_instance_uid=_uid(*seed, "instance"), instance_number=1, manufacturer="anatomix",
        manufacturer_model_name=algorithm[:64], software_versions=version[:64], device_serial_number="none",
        content_label="ANATOMY", content_description="anatomix lungs and heart segmentation",
        series_description=f"anatomix {algorithm}"[:64], omit_empty_frames=False)
    with atomic_write(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return Path(path)


# -- reading (pydicom only) ----------------------------------------------------------------------
@dataclass
class DicomSeg:
    """A DICOM-SEG read back as anatomix masks.

    Attributes:
        path: the SEG file.
        masks: {structure key: (Rows, Columns) bool}; a segment with no frame is all False.
        labels: {structure key: segment label}.
        referenced_sop_instance_uids: the source images the SEG references.
        study_instance_uid: the SEG's study.
        algorithm: {structure key: (algorithm name, version)} where the segment names one.
    """

    path: Path
    masks: dict[str, np.ndarray]
    labels: dict[str, str]
    referenced_sop_instance_uids: list[str]
    study_instance_uid: str
    algorithm: dict[str, tuple[str, str]]

    @property
    def shape(self) -> tuple[int, int]:
        return next(iter(self.masks.values())).shape if self.masks else (0, 0)


def _structure_key(item) -> str | None:
    """anatomix key of a Segment Sequence item (SNOMED CT code + laterality, else its label)."""
    from anatomix.anatomy import STRUCTURE_BY_KEY

    types = item.get("SegmentedPropertyTypeCodeSequence") or []
    if types:
        code = str(types[0].get("CodeValue", ""))
        modifiers = types[0].get("SegmentedPropertyTypeModifierCodeSequence") or item.get(
            "SegmentedPropertyTypeModifierCodeSequence") or []
        side = str(modifiers[0].get("CodeValue", "")) if modifiers else ""
        for key, (value, _) in STRUCTURE_CODES.items():
            if value == code and (key not in LATERALITY or LATERALITY[key][0] == side):
                return key
    label = str(item.get("SegmentLabel", "")).strip().casefold()
    for key, s in STRUCTURE_BY_KEY.items():
        if label in (key.casefold(), s.label.casefold()):
            return key
    return None


def is_dicom_seg(path: PathLike) -> bool:
    """Is ``path`` a DICOM Segmentation Storage file? (header only; False on any error)"""
    import pydicom

    if not has_dicom_marker(path):
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - anything unreadable is not a SEG
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID


def read_dicom_seg(path: PathLike, max_pixels: int = MAX_PIXELS) -> DicomSeg:
    """Read a binary (or fractional) DICOM-SEG of a single radiograph into structure masks.

    Args:
        path: the SEG file.
        max_pixels: largest frame accepted (Rows x Columns), and at most one frame per segment
            and 16 segments are decoded (checked before the pixel data are read).

    Raises:
        ReadError: not a SEG, too large, a segment anatomix does not know, or frames that do
            not map to segments.
    """
    import pydicom

    p = Path(path)
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001
        raise ReadError(p, f"not a DICOM file ({type(e).__name__}: {e})") from None
    try:
        return _seg_of(p, ds, max_pixels)
    except ReadError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed header or frame is the file's fault
        raise ReadError(p, f"malformed DICOM-SEG ({type(e).__name__}: {e})") from None


def _seg_of(p: Path, ds, max_pixels: int) -> DicomSeg:
    """:func:`read_dicom_seg` of an already read header ``ds`` (may raise anything on a
    malformed file; the caller turns that into :class:`ReadError`)."""
    import pydicom

    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS_UID:
        raise ReadError(p, f"not a DICOM-SEG (SOP Class {ds.get('SOPClassUID', 'missing')})")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows * cols > max_pixels or rows < 1 or cols < 1:
        raise ReadError(p, f"SEG frame {rows}x{cols} outside 1..{max_pixels} pixels")
    segments = {int(s.SegmentNumber): s for s in ds.get("SegmentSequence", [])}
    if not segments or len(segments) > 16 or frames > len(segments):
        raise ReadError(p, f"{len(segments)} segments and {frames} frames: not one frame per anatomical segment")
    keys: dict[int, str] = {}
    for number, item in segments.items():
        key = _structure_key(item)
        if key is None:
            raise ReadError(p, f"segment {number} ({item.get('SegmentLabel', '')!r}) is no anatomix structure")
        keys[number] = key
    # frame -> segment number: per-frame functional groups, else the shared group
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    numbers = []
    for i in range(frames):
        group = per_frame[i] if i < len(per_frame) else None
        ident = (group.get("SegmentIdentificationSequence") if group is not None else None) or (
            shared.get("SegmentIdentificationSequence") if shared is not None else None)
        if not ident:
            raise ReadError(p, f"frame {i + 1} names no segment (Segment Identification Sequence)")
        numbers.append(int(ident[0].ReferencedSegmentNumber))
    full = pydicom.dcmread(p)
    pixels = full.pixel_array.reshape(frames, rows, cols)
    masks = {keys[n]: np.zeros((rows, cols), bool) for n in sorted(keys)}
    for frame, n in zip(pixels, numbers):
        if n not in keys:
            raise ReadError(p, f"a frame names segment {n}, which the Segment Sequence lacks")
        masks[keys[n]] |= frame > 0
    referenced = [str(r.ReferencedSOPInstanceUID) for series in ds.get("ReferencedSeriesSequence", [])
                  for r in series.get("ReferencedInstanceSequence", [])]
    algorithm = {}
    for n, item in segments.items():
        ids = item.get("SegmentationAlgorithmIdentificationSequence") or []
        if ids:
            algorithm[keys[n]] = (str(ids[0].get("AlgorithmName", "")), str(ids[0].get("AlgorithmVersion", "")))
    labels = {keys[n]: str(item.get("SegmentLabel", "")) for n, item in segments.items()}
    return DicomSeg(p, masks, labels, referenced, str(ds.get("StudyInstanceUID", "")), algorithm)


def find_seg_files(root: PathLike) -> list[Path]:
    """DICOM-SEG files in a file or folder (recursive; by SOP Class, any suffix), sorted."""
    root = Path(root)
    if root.is_file():
        return [root] if is_dicom_seg(root) else []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and is_dicom_seg(p))


def index_sources(folders: Iterable[PathLike]) -> dict[str, Path]:
    """{SOP Instance UID: file} of the DICOM files under ``folders`` (headers only)."""
    import pydicom

    out: dict[str, Path] = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            if not has_dicom_marker(p):
                continue
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "SOPClassUID"])
            except Exception:  # noqa: BLE001, S112 - an unreadable file is not a source
                continue
            if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS_UID and ds.get("SOPInstanceUID"):
                out.setdefault(str(ds.SOPInstanceUID), p)
    return out


def frame_segments(path: PathLike) -> Sequence[int]:
    """Referenced segment number of every frame (for tests and tools)."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return [int(g.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            for g in ds.PerFrameFunctionalGroupsSequence]
