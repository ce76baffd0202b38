"""The one record every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np


@dataclass
class Radiograph:
    """A chest radiograph in its original frame.

    Attributes:
        pixels: float32 array (H, W) in [0, 1], displayed orientation (row 0 at the top,
            column 0 at the image's left, which is the patient's right), lungs dark.
        path: the file it was read from, or None for in-memory images.
        spacing: pixel spacing (row, column) in mm when the file says it, else None.
        affine: the 4x4 NIfTI affine when read from NIfTI (writers reuse it), else None.
        meta: source metadata (format, bit depth, photometric interpretation, ...).
    """

    pixels: np.ndarray
    path: Optional[Path] = None
    spacing: Optional[Tuple[float, float]] = None
    affine: Optional[np.ndarray] = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> Tuple[int, int]:
        """Original (height, width) in pixels."""
        return tuple(self.pixels.shape[:2])  # type: ignore[return-value]

    @property
    def image_id(self) -> str:
        """The file stem without image extensions (``a.nii.gz`` -> ``a``), or ``"image"``."""
        from anatomix.io.inputs import image_stem

        return "image" if self.path is None else image_stem(self.path)
