"""Atomic file writes: a reader never sees a half-written output file."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary file is ``.<name>.tmp-<pid>-<random>`` in the same directory (so the final
    :func:`os.replace` is atomic on POSIX filesystems). The block writes the temporary path by
    whatever means it likes. When the block raises, the temporary file is removed and ``path``
    is left untouched (an older version of it stays as it was). Parent directories are created.

    Example:
        >>> with atomic_write("out/mask.png") as tmp:
        ...     image.save(tmp, format="PNG")

    Args:
        path: the final destination.

    Yields:
        The temporary path to write.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames into it survive a power cut (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
