"""The hostile input corpus: files a real batch meets (broken, odd, huge), built in a folder.

Shared by ``tests/test_batch.py``, ``bench/hostile_batch.py`` and ``bench/identical_outputs.py``.
Built from a seeded generator, so the same call writes the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from dicom_synth import write_dicom
from PIL import Image


def png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Write ``array`` (uint8/uint16, HxW or HxWxC) as a PNG, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def noise(rng: np.random.Generator, h: int = 64, w: int = 64) -> np.ndarray:
    """(h, w) uint8 noise: an image any reader accepts."""
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def hostile_corpus(root: Path, seed: int = 0) -> tuple[set[str], set[str]]:
    """Build the corpus in ``root``; return (names that must be segmented, names that must fail)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty.png").write_bytes(b"")
    (root / "garbage.png").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    full = png(root / "tmp_full.png", noise(rng, 80, 80)).read_bytes()
    (root / "truncated.png").write_bytes(full[: len(full) // 2])
    (root / "tmp_full.png").unlink()
    png(root / "sixteen.png", noise(rng, 70, 60).astype(np.uint16) * 257)
    png(root / "rgba.png", np.dstack([noise(rng), noise(rng), noise(rng), np.full((64, 64), 128, np.uint8)]))
    Image.fromarray(noise(rng), "L").convert("P").save(root / "palette.png")
    huge = np.zeros((4800, 6000), np.uint8)
    huge[1000:3800:7, 1000:5000:7] = 90
    png(root / "huge.png", huge)
    png(root / "nonsquare.png", noise(rng, 50, 130))
    write_dicom(root / "mono1.dcm", rng.integers(0, 4096, (48, 40)), "MONOCHROME1")
    write_dicom(root / "nopixels.dcm", shape=(48, 40))
    nib.save(nib.Nifti1Image(rng.random((40, 52)).astype(np.float32), np.diag([-1.0, -1.0, 1, 1])),
             root / "scan.nii.gz")
    png(root / "black.png", np.zeros((64, 64), np.uint8))
    png(root / "sub" / "胸部 résumé.png", noise(rng))
    os.symlink(root / "does-not-exist.png", root / "dangling.png")
    png(root / "folder.png" / "inner.png", noise(rng, 32, 32))  # a directory named like an image
    (root / "notes.txt").write_text("not an image, skipped when walking a directory\n")
    good = {"sixteen.png", "rgba.png", "palette.png", "huge.png", "nonsquare.png", "mono1.dcm",
            "scan.nii.gz", "black.png", "胸部 résumé.png", "inner.png"}
    bad = {"empty.png", "garbage.png", "truncated.png", "nopixels.dcm", "dangling.png", "folder.png"}
    return good, bad
