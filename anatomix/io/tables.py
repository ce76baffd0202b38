"""CSV tables that survive a kill: written atomically and fsynced, read without a torn last row.

Every table anatomix writes (``segmentations.csv`` rewrites, ``errors.csv``, ``notes.csv``,
``qc.csv``, anomaly ``scores.csv``) goes through :func:`write_table`; tables that an earlier,
possibly killed, run appended to are read back with :func:`read_table`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from anatomix.io.atomic import atomic_write


def read_table(path: Path) -> tuple[list[str], list[list[str]], bool]:
    """Header and rows of a CSV; drops a partial last row (from a kill) and rows of the wrong width.

    Returns:
        (header, complete rows, whether anything was dropped).

    Raises:
        OSError: the file cannot be read.
    """
    data = Path(path).read_bytes()
    dropped = False
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        dropped = True
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    text = data.decode("utf-8", errors="replace")
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        return [], [], dropped
    header, rows = records[0], records[1:]
    good = [r for r in rows if len(r) == len(header)]
    return header, good, dropped or len(good) != len(rows)


def write_table(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write ``header`` and ``rows`` as a UTF-8 CSV (``\\n`` line ends) atomically, fsynced."""
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())

