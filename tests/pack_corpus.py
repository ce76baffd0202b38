"""A corpus of ``n`` distinct radiograph PNGs made from the data pack's JSRT films.

Shared by ``bench/batch_speed.py`` and ``bench/kill_resume.py`` (bench scripts never import
each other). Seeded: the same call writes the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("ANATOMIX_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def make_corpus(folder: Path, n: int, size: int = 512, seed: int = 0, data: Path = DATA) -> list[Path]:
    """``n`` distinct ``size`` px grayscale PNGs in ``folder``: the pack's JSRT films, then
    mirrored, gamma-changed and shifted variants of them.

    Raises:
        SystemExit: the data pack is not at ``data`` (set ANATOMIX_DATA).
    """
    from PIL import Image

    from anatomix.data.cases import pack_cases

    sources = [c.image for c in pack_cases(data)] if (data / "cxr-seg").is_dir() else []
    if not sources:
        raise SystemExit(f"data pack not found at {data} (set ANATOMIX_DATA)")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        img = Image.open(src).convert("L")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BOX)
        a = np.asarray(img, dtype=np.float32) / 255.0
        variant = i // len(sources)
        if variant % 2:
            a = a[:, ::-1]
        if variant:
            a = np.clip(a ** rng.uniform(0.8, 1.25), 0, 1)
            a = np.roll(a, rng.integers(-8, 9, size=2), axis=(0, 1))
        path = folder / f"{src.stem}_v{variant}.png"
        Image.fromarray(np.round(a * 255).astype(np.uint8)).save(path)
        out.append(path)
    return out
