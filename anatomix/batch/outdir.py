"""The output folder of a segmentation batch: its layout, lock, resume state and model claim.

Layout (names below): ``segmentations.csv`` (one row per finished image: the row is the image's
completion marker), ``masks/``, ``overlays/``, ``dicom-seg/``, ``errors.csv``, ``notes.csv``
(inputs that got no DICOM-SEG) and ``run.json`` (the model that wrote the folder). One run at a
time holds the folder (:func:`folder_lock`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from anatomix.errors import AnatomixError
from anatomix.io.atomic import atomic_write
from anatomix.io.inputs import resolved_key
from anatomix.io.tables import read_table, write_table

CSV_NAME = "segmentations.csv"
MASKS_DIR = "masks"
OVERLAYS_DIR = "overlays"
SEG_DIR = "dicom-seg"
NOTES_NAME = "notes.csv"
LOCK_NAME = ".anatomix-segment.lock"
RUN_NAME = "run.json"
"""The model that wrote the folder (:func:`anatomix.models.model_identity`): a resume with another
model is refused, so one folder never mixes two models' results."""
DICOM_SEG = "dicom-seg"
FORMATS: dict[str, str] = {"png": ".png", "nifti": ".nii.gz", DICOM_SEG: ".dcm"}
"""Mask formats and the suffix of their files (``dicom-seg``: one file per image, all structures)."""


@contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` (released by the OS even on SIGKILL)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    f = open(out_dir / LOCK_NAME, "a")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise AnatomixError(f"{out_dir}: another 'anatomix segment' run is writing to this folder") from None
        yield
    finally:
        f.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_temporaries(out_dir: Path) -> None:
    """Delete ``.<name>.tmp-<pid>-<hex>`` files of atomic writes whose process died."""
    for folder in (out_dir, out_dir / MASKS_DIR, out_dir / OVERLAYS_DIR, out_dir / SEG_DIR):
        if not folder.is_dir():
            continue
        for p in folder.glob(".*.tmp-*"):
            try:
                pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
            except (IndexError, ValueError):
                continue
            if pid == os.getpid() or not _pid_alive(pid):
                p.unlink(missing_ok=True)


class Outputs:
    """File names and completeness checks of one output folder."""

    def __init__(self, out_dir: Path, structures: Sequence[str], formats: Sequence[str], overlays: bool):
        self.out_dir, self.structures, self.formats, self.overlays = out_dir, tuple(structures), tuple(formats), overlays
        self.notes: dict[str, tuple[str, str]] = {}  # image_id -> (path, note): no DICOM-SEG for it

    def seg(self, image_id: str) -> Path:
        return self.out_dir / SEG_DIR / f"{image_id}{FORMATS[DICOM_SEG]}"

    def mask(self, image_id: str, structure: str, fmt: str) -> Path:
        return self.out_dir / MASKS_DIR / f"{image_id}_{structure}{FORMATS[fmt]}"

    def overlay(self, image_id: str) -> Path:
        return self.out_dir / OVERLAYS_DIR / f"{image_id}.png"

    def files(self, image_id: str) -> list[Path]:
        out = [self.mask(image_id, s, f) for f in self.formats if f != DICOM_SEG for s in self.structures]
        if DICOM_SEG in self.formats and image_id not in self.notes:
            out.append(self.seg(image_id))
        return out + ([self.overlay(image_id)] if self.overlays else [])

    def complete(self, image_id: str) -> bool:
        for p in self.files(image_id):
            try:
                if p.stat().st_size == 0:
                    return False
            except OSError:
                return False
        return True


class RowWriter:
    """Appends CSV rows to ``segmentations.csv``; flush + fsync on :meth:`sync`."""

    def __init__(self, path: Path):
        self._f = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
        self._w = csv.writer(self._f, lineterminator="\n")

    def write(self, cells: Sequence[str]) -> None:
        self._w.writerow(cells)

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()


def claim_for_model(out: Path, identity: tuple[str, str], overwrite: bool) -> None:
    """Record ``identity`` in ``out/run.json``; refuse a folder that another model wrote.

    Raises:
        AnatomixError: ``run.json`` names another model (or version) and ``overwrite`` is off;
            the message says to use a new folder or ``--overwrite`` (which redoes this run's images).
    """
    path = out / RUN_NAME
    record = {"model": identity[0], "version": identity[1]}
    if path.is_file() and not overwrite:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old != record:
            raise AnatomixError(
                f"{out} holds results of {old.get('model')} {old.get('version')}, this run is "
                f"{record['model']} {record['version']}: resuming would mix two models; use a new "
                f"output folder, or --overwrite to redo this run's images")
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def prepare_csv(path: Path, header: list[str], items: Sequence[Path], outputs: Outputs,
                 overwrite: bool) -> tuple[list[str], dict[str, str], set[str]]:
    """Bring an existing ``segmentations.csv`` into shape for this run.

    Keeps rows of images outside this run, and rows of this run's images that are finished
    (files present) unless ``overwrite``; drops the rest (and a partial last line), rewriting the
    file atomically when anything changed. Columns of an older file that this run does not write
    are kept (at the end); a file without a usable header is replaced.

    Returns:
        (the file's header, {resolved path: image_id} of finished images of this run,
        ids of the kept rows of other images).
    """
    keys = {resolved_key(p) for p in items}
    if not path.is_file():
        write_table(path, header, [])
        return header, {}, set()
    old_header, rows, changed = read_table(path)
    if not old_header or "image_id" not in old_header or "path" not in old_header:
        write_table(path, header, [])
        return header, {}, set()
    full = header + [c for c in old_header if c not in header]
    if full != old_header:
        changed = True
    i_id, i_path = old_header.index("image_id"), old_header.index("path")
    done: dict[str, str] = {}
    foreign: set[str] = set()
    kept: list[list[str]] = []
    seen_ids: set[str] = set()
    for r in rows:
        image_id, key = r[i_id], resolved_key(r[i_path]) if r[i_path] else ""
        if not image_id or image_id.casefold() in seen_ids:  # duplicate or malformed
            changed = True
            continue
        if key in keys:
            if overwrite or key in done or not outputs.complete(image_id):
                changed = True
                continue
            done[key] = image_id
        else:
            foreign.add(image_id)
        seen_ids.add(image_id.casefold())
        kept.append(r)
    if changed:
        remap = [old_header.index(c) if c in old_header else None for c in full]
        write_table(path, full, ([r[j] if j is not None else "" for j in remap] for r in kept))
    return full, done, foreign


def read_notes(path: Path) -> dict[str, tuple[str, str]]:
    """``notes.csv`` of an earlier run: {image_id: (path, note)}."""
    if not path.is_file():
        return {}
    header, rows, _ = read_table(path)
    return {r[0]: (r[1], r[2]) for r in rows if header[:3] == ["image_id", "path", "note"]}
