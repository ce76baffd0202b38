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


def pack_cases(root: Path | str, sources: Sequence[str] = ("jsrt",)) -> List[SegCase]:
    """Cases of the data pack's ``cxr-seg`` folder (``root`` is the pack or ``cxr-seg``).

    Args:
        root: ``../shared/data`` or its ``cxr-seg`` sub-folder.
        sources: which manifest sources to keep (``jsrt``, ``shenzhen``).
    """
    root = Path(root)
    seg = root / "cxr-seg" if (root / "cxr-seg").is_dir() else root
    cases = []
    with open(seg / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] not in sources:
                continue
            folder = seg / row["source"]
            cid = row["id"]
            lm = folder / f"{cid}_landmarks.npy"
            masks = {s.key: folder / f"{cid}_{s.key}.png" for s in STRUCTURES
                     if (folder / f"{cid}_{s.key}.png").is_file()}
            cases.append(SegCase(cid, folder / f"{cid}.png", lm if lm.is_file() else None, masks,
                                 group=row.get("patient_id") or cid,
                                 stratum=f"{row['source']}/{row.get('label', '')}", meta=row))
    return cases


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
    """True when ``root`` is the data pack (holds ``cxr-seg/manifest.csv``) or its ``cxr-seg``."""
    root = Path(root)
    return (root / "cxr-seg" / "manifest.csv").is_file() or (root / "manifest.csv").is_file()


def labelled_cases(root: Path | str) -> List[SegCase]:
    """The pack's JSRT cases when ``root`` is the data pack, else the cases of a labelled folder."""
    return pack_cases(root) if is_pack(root) else folder_cases(root)


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
