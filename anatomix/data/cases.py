"""Labelled cases: the data pack's manifests, generic folders, and the held-out split."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from anatomix.anatomy import STRUCTURES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz", ".npy")


@dataclass
class SegCase:
    """One labelled radiograph.

    Attributes:
        case_id: unique id (file stem).
        image: path of the radiograph.
        landmarks: path of a (N, 2) ``.npy`` of (x, y) in the image's pixel frame, or None.
        masks: {structure key: path of a binary mask PNG in the image's frame}.
        group: patient id (cases of one patient never straddle the split).
        stratum: label used to stratify the split (e.g. ``jsrt/nodule``).
        meta: the manifest row, when there is one.
    """

    case_id: str
    image: Path
    landmarks: Optional[Path] = None
    masks: Dict[str, Path] = field(default_factory=dict)
    group: str = ""
    stratum: str = ""
    meta: Dict[str, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The collection the case comes from (manifest ``source``; ``folder`` otherwise)."""
        return self.meta.get("source") or self.stratum.split("/")[0]


PACK_FOLDERS = ("cxr-seg", "cxr-lungs")
"""Labelled folders of the data pack (each: ``manifest.csv`` + ``<source>/<id>.png`` + masks)."""
PACK_SOURCES = ("jsrt", "montgomery", "shenzhen")
"""Every labelled source of the data pack (``shenzhen`` joins the few cxr-seg cases to cxr-lungs)."""


def manifest_cases(folder: Path | str, sources: Optional[Sequence[str]] = None) -> List[SegCase]:
    """Cases of a folder laid out like the pack's ``cxr-seg`` or ``cxr-lungs``.

    The folder holds ``manifest.csv`` (columns ``id``, ``source``, optional ``patient_id`` and
    ``label``) and, per row, ``<source>/<id>.png`` with masks ``<source>/<id>_<structure>.png``
    and optional landmarks ``<source>/<id>_landmarks.npy``. A structure without a mask file is
    unlabelled for that case (partial labels), never "absent".

    Args:
        folder: the folder.
        sources: keep only rows of these sources (all when None).
    """
    folder = Path(folder)
    cases = []
    with open(folder / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if sources is not None and row["source"] not in sources:
                continue
            sub = folder / row["source"]
            cid = row["id"]
            lm = sub / f"{cid}_landmarks.npy"
            masks = {s.key: sub / f"{cid}_{s.key}.png" for s in STRUCTURES
                     if (sub / f"{cid}_{s.key}.png").is_file()}
            cases.append(SegCase(cid, sub / f"{cid}.png", lm if lm.is_file() else None, masks,
                                 group=row.get("patient_id") or cid,
                                 stratum=f"{row['source']}/{row.get('label', '')}", meta=row))
    return cases


def pack_cases(root: Path | str, sources: Sequence[str] = ("jsrt",)) -> List[SegCase]:
    """Cases of the data pack's labelled folders (``cxr-seg`` and ``cxr-lungs``).

    Args:
        root: ``../shared/data`` (or one of its labelled folders).
        sources: which sources to keep (:data:`PACK_SOURCES`); JSRT alone by default, the
            collection the first models and benchmarks were built on.
    """
    root = Path(root)
    folders = [root / name for name in PACK_FOLDERS if (root / name / "manifest.csv").is_file()]
    return [c for folder in folders or [root] for c in manifest_cases(folder, sources)]


def folder_cases(folder: Path | str) -> List[SegCase]:
    """Cases of a folder of images with ``<stem>_<structure>.png`` masks (and optional
    ``<stem>_landmarks.npy``). Files whose stem ends in a structure key are masks, not images."""
    folder = Path(folder)
    keys = tuple(f"_{s.key}" for s in STRUCTURES)
    cases = []
    for p in sorted(folder.iterdir()):
        name = p.name.lower()
        if not p.is_file() or not name.endswith(IMAGE_SUFFIXES) or name.endswith("_landmarks.npy"):
            continue
        stem = p.name[: -len(".nii.gz")] if name.endswith(".nii.gz") else p.stem
        if stem.endswith(keys):
            continue
        masks = {s.key: folder / f"{stem}_{s.key}.png" for s in STRUCTURES
                 if (folder / f"{stem}_{s.key}.png").is_file()}
        lm = folder / f"{stem}_landmarks.npy"
        if masks or lm.is_file():
            cases.append(SegCase(stem, p, lm if lm.is_file() else None, masks, group=stem, stratum="folder"))
    return cases


def is_pack(root: Path | str) -> bool:
    """True when ``root`` is the data pack or one of its labelled folders (holds a manifest)."""
    root = Path(root)
    return any((root / name / "manifest.csv").is_file() for name in PACK_FOLDERS) \
        or (root / "manifest.csv").is_file()


def labelled_cases(root: Path | str, sources: Optional[Sequence[str]] = None) -> List[SegCase]:
    """Every labelled case under ``root``: the data pack (all its labelled folders), a folder
    with a manifest (``cxr-lungs`` layout), or a plain folder (:func:`folder_cases`).

    Args:
        root: where the cases are.
        sources: keep only these manifest sources (pack and manifest folders; all when None).
    """
    if not is_pack(root):
        return folder_cases(root)
    return pack_cases(root, sources if sources is not None else PACK_SOURCES)


def split_cases(cases: Sequence[SegCase], val_fraction: float = 0.2,
                seed: int = 0) -> Tuple[List[SegCase], List[SegCase]]:
    """Deterministic train/validation split, grouped by patient and stratified.

    Within each stratum the patients are ordered by a hash of (seed, patient id) and the first
    ``round(val_fraction * n_patients)`` go to validation. The split depends only on the ids,
    not on file order or library versions.

    Returns:
        (train cases, validation cases).
    """
    def key(group: str) -> str:
        return hashlib.sha1(f"{seed}:{group}".encode()).hexdigest()

    val_groups = set()
    strata: Dict[str, set] = {}
    for c in cases:
        strata.setdefault(c.stratum, set()).add(c.group)
    for groups in strata.values():
        ordered = sorted(groups, key=key)
        val_groups.update(ordered[: int(round(val_fraction * len(ordered)))])
    train = [c for c in cases if c.group not in val_groups]
    val = [c for c in cases if c.group in val_groups]
    return train, val
