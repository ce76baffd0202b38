"""Inputs of a batch: expand files, folders, globs and lists into images; ids; ``errors.csv``.

Every command that takes many radiographs (``segment``, ``anomaly fit/score``, exports) expands
its inputs here, so a bad entry (missing path, dangling link, unmatched glob, a directory named
like an image) never stops a batch: it becomes an :class:`InputError`, a row of ``errors.csv``.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from anatomix.io.tables import read_table, write_table

PathLike = Union[str, "os.PathLike[str]"]

ERRORS_NAME = "errors.csv"

LIST_SUFFIXES = (".txt", ".csv")
"""Input files with these suffixes are lists of paths, not images."""
LIST_PATH_COLUMNS = ("path", "Path", "file", "filename", "image", "image_path", "filepath")
"""Column of a ``.csv`` input list that holds the paths (else its first column)."""
_NOT_IMAGES = frozenset({".txt", ".csv", ".json", ".md", ".html", ".xml", ".py", ".yaml", ".yml",
                         ".log", ".pt", ".pth", ".zip", ".gz", ".tar", ".pdf", ".doc", ".docx"})
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputError:
    """An input that could not be processed: a row of ``errors.csv``."""

    path: str
    reason: str


def resolved_key(path: PathLike) -> str:
    """The resolved path: what identifies an image across runs."""
    return os.path.realpath(os.fspath(path))


def image_stem(path: PathLike) -> str:
    """File name without its image extension (``a.nii.gz`` -> ``a``), as Radiograph.image_id."""
    name = Path(path).name
    for ext in (".nii.gz", ".csv.gz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem or name


# -- expansion -----------------------------------------------------------------------------------
def _suffix(name: str) -> str:
    lower = name.lower()
    return ".nii.gz" if lower.endswith(".nii.gz") else os.path.splitext(lower)[1]


def _image_suffixes() -> tuple[str, ...]:
    from anatomix.io.read import SUPPORTED_SUFFIXES

    return tuple(SUPPORTED_SUFFIXES)


def has_dicom_marker(path: PathLike) -> bool:
    """Does the file carry ``DICM`` after its 128-byte preamble? (False when unreadable)"""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _is_candidate(path: str, name: str, suffixes: tuple[str, ...]) -> bool:
    """Does a file met while walking a directory look like a radiograph?"""
    suffix = _suffix(name)
    if suffix in suffixes:
        return True
    if suffix in _NOT_IMAGES or name.startswith("."):
        return False
    return has_dicom_marker(path)  # DICOM files often have no or numeric suffixes


def _walk(root: str, found: list[str], errors: list[InputError], suffixes: tuple[str, ...]) -> None:
    """Collect the image files under ``root`` (following directory links, without cycles)."""
    seen: set[tuple[int, int]] = set()

    def onerror(e: OSError) -> None:
        errors.append(InputError(os.path.abspath(e.filename or root),
                                 f"cannot list directory: {e.strerror or e}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for d in dirnames:
            if _suffix(d) in suffixes:  # walked into all the same, but reported
                errors.append(InputError(os.path.abspath(os.path.join(dirpath, d)),
                                         "is a directory named like an image file, not an image"))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if _is_candidate(full, name, suffixes):
                found.append(os.path.abspath(full))


def _read_list(path: str) -> tuple[list[str], str | None]:
    """Entries of a ``.txt`` (one per line, ``#`` comments) or ``.csv`` list; (entries, error)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        return [], f"cannot read list file: {e}"
    if path.lower().endswith(".csv"):
        try:
            rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
        except csv.Error as e:
            return [], f"malformed CSV list: {e}"
        if not rows:
            return [], None
        header = [c.strip() for c in rows[0]]
        column = next((header.index(c) for c in LIST_PATH_COLUMNS if c in header), None)
        if column is not None:
            rows = rows[1:]
        elif header and not _looks_like_path(header[0], os.path.dirname(path)):
            return [], (f"CSV list has no path column (one of {', '.join(LIST_PATH_COLUMNS)}) "
                        f"and its first cell {header[0]!r} is not a file")
        column = column or 0
        return [r[column].strip() for r in rows if len(r) > column and r[column].strip()], None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")], None


def _looks_like_path(entry: str, base: str) -> bool:
    return os.path.lexists(entry) or os.path.lexists(os.path.join(base, entry)) or any(
        c in entry for c in _GLOB_CHARS) or _suffix(entry) in _image_suffixes()


def _expand_entry(entry: str, found: list[str], errors: list[InputError], suffixes: tuple[str, ...],
                  lists: bool, base: str | None = None) -> None:
    raw = os.path.expanduser(entry)
    if base is not None and not os.path.isabs(raw):
        here = os.path.join(base, raw)  # relative to the list file, else to the working dir
        raw = here if os.path.lexists(here) or not os.path.lexists(raw) else raw
    if os.path.isdir(raw):
        _walk(raw, found, errors, suffixes)
    elif os.path.isfile(raw):
        if lists and _suffix(raw) in LIST_SUFFIXES:
            entries, error = _read_list(raw)
            if error:
                errors.append(InputError(os.path.abspath(raw), error))
            if not entries and not error:
                errors.append(InputError(os.path.abspath(raw), "list file names no inputs"))
            for e in entries:
                _expand_entry(e, found, errors, suffixes, lists=False, base=os.path.dirname(os.path.abspath(raw)))
        else:
            found.append(os.path.abspath(raw))  # any explicit file; the reader says if it is bad
    elif os.path.islink(raw):
        errors.append(InputError(os.path.abspath(raw), "dangling symlink (its target does not exist)"))
    elif os.path.lexists(raw):
        errors.append(InputError(os.path.abspath(raw), "not a regular file or directory"))
    elif _GLOB_CHARS & set(entry):
        matches = sorted(glob.glob(raw, recursive=True))
        if not matches:
            errors.append(InputError(entry, "glob pattern matched no files"))
        for m in matches:  # like a directory's content: image-like files only
            if os.path.isdir(m):
                _walk(m, found, errors, suffixes)
            elif _is_candidate(m, os.path.basename(m), suffixes):
                found.append(os.path.abspath(m))
    else:
        errors.append(InputError(os.path.abspath(raw) if base else entry, "no such file or directory"))


def expand_inputs(inputs: Iterable[PathLike]) -> tuple[list[Path], list[InputError]]:
    """Expand command-line inputs into image files; never raises on a bad entry.

    Each entry is, in this order of precedence:

    - an existing directory: walked recursively (directory links followed, cycles cut), keeping
      files with a readable image suffix (see :data:`anatomix.io.read.SUPPORTED_SUFFIXES`) and
      files of other names that carry the DICOM marker; hidden files are skipped. A directory
      named like an image (``x.png/``) is reported as an error and walked all the same;
    - an existing ``.txt`` file (one path per line, blank lines and ``#`` comments ignored) or
      ``.csv`` file (column ``path``/``file``/``filename``/``image``/... or else the first
      column, header optional): a list of entries, each expanded like a command-line entry
      (files, directories, globs; not further lists), relative ones against the list's folder;
    - any other existing file: an image (if the reader cannot read it, that is its error);
    - a dangling symlink: an error;
    - a pattern with ``*``, ``?`` or ``[``: :func:`glob.glob` with ``**`` support; an error when it
      matches nothing;
    - anything else: an error (no such file).

    Args:
        inputs: the entries.

    Returns:
        (image paths: absolute, unique by resolved path, sorted; errors: one per bad entry).
    """
    suffixes = _image_suffixes()
    found: list[str] = []
    errors: list[InputError] = []
    for entry in inputs:
        _expand_entry(os.fspath(entry), found, errors, suffixes, lists=True)
    unique: dict[str, str] = {}
    for p in sorted(found):
        unique.setdefault(resolved_key(p), p)
    dedup_errors: dict[str, InputError] = {}
    for e in errors:
        dedup_errors.setdefault(e.path, e)
    return sorted((Path(p) for p in unique.values()), key=str), list(dedup_errors.values())


def assign_image_ids(paths: Sequence[PathLike], taken: Iterable[str] = ()) -> list[str]:
    """Unique, deterministic image ids: the file stem, ``<stem>_<n>`` when stems collide.

    Ids are compared case-insensitively (outputs may land on a case-insensitive file system).
    Paths are visited in sorted order; the first of a group of equal stems keeps the stem unless
    it is taken, the others get the smallest free ``_1``, ``_2``, ... The result depends only on
    the set of paths (and ``taken``), so a resumed run assigns the same ids.

    Args:
        paths: image paths.
        taken: ids already in use in the output folder (by images outside ``paths``).

    Returns:
        One id per path, in the order of ``paths``.
    """
    order = sorted(range(len(paths)), key=lambda i: os.fspath(paths[i]))
    stems = [image_stem(p) for p in paths]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.casefold()] = counts.get(s.casefold(), 0) + 1
    used = {t.casefold() for t in taken}
    # stems that occur once are reserved first, so that a suffixed id never steals one
    reserved = {s.casefold() for s in stems if counts[s.casefold()] == 1 and s.casefold() not in used}
    ids: list[str | None] = [None] * len(paths)
    for i in order:
        s = stems[i]
        if s.casefold() in reserved:
            ids[i] = s
            used.add(s.casefold())
            continue
        candidate, n = s, 0
        while candidate.casefold() in used or (n and candidate.casefold() in reserved):
            n += 1
            candidate = f"{s}_{n}"
        ids[i] = candidate
        used.add(candidate.casefold())
    return [str(i) for i in ids]


# -- errors.csv ----------------------------------------------------------------------------------
def write_errors(path: Path, errors: Iterable[InputError]) -> None:
    """``errors.csv``: one ``path, reason`` row per failed input, written atomically."""
    write_table(path, ["path", "reason"], ([e.path, e.reason] for e in errors))


def read_errors(path: Path) -> list[InputError]:
    """The rows of an ``errors.csv`` written by :func:`write_errors` (none when absent or foreign)."""
    if not path.is_file():
        return []
    try:
        header, rows, _ = read_table(path)
    except OSError:
        return []
    if header[:2] != ["path", "reason"]:
        return []
    return [InputError(r[0], r[1]) for r in rows]
