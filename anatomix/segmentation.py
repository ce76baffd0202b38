"""The result record of every segmenter, in the original image frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from anatomix.anatomy import Template


@dataclass
class Segmentation:
    """Landmarks and masks of one radiograph, in its original frame.

    Attributes:
        image_id: the radiograph's id (file stem).
        path: the file it came from (None for in-memory images).
        shape: original (H, W).
        template: the landmark template of ``landmarks``.
        landmarks: (N, 2) (x, y) in original pixels, template order.
        masks: {structure key: (H, W) bool}.
        node_std: (N,) per-node standard deviation in original pixels from latent sampling,
            when uncertainty was asked for.
        extra: model-specific outputs (e.g. raw pixel probabilities), not written by default.
    """

    image_id: str
    path: Optional[Path]
    shape: Tuple[int, int]
    template: Template
    landmarks: np.ndarray
    masks: Dict[str, np.ndarray]
    node_std: Optional[np.ndarray] = None
    extra: Dict[str, object] = field(default_factory=dict)
