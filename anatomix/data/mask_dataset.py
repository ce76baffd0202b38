"""Images and per-structure mask targets in the model frame, for the pixel segmenters."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from anatomix.data.augment import MaskAugment
from anatomix.data.cases import SegCase
from anatomix.io.read import read_mask
from anatomix.data.preprocess import to_model_frame
from anatomix.io.geometry import SquareFrame

PIXEL_KEYS: Tuple[str, ...] = ("lungR", "lungL", "heart")
"""Default output channels of the pixel models (multi-label: one sigmoid channel each)."""


def case_masks(case: SegCase, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    """{key: (H, W) bool} original-frame masks of a case.

    Raises:
        KeyError: when the case lacks a mask for one of ``keys``.
    """
    missing = [k for k in keys if k not in case.masks]
    if missing:
        raise KeyError(f"case {case.case_id} has no mask for {missing}")
    return {k: read_mask(case.masks[k]) for k in keys}


class MaskDataset(Dataset):
    """Preloaded images and mask targets in the (S, S) model frame.

    Masks are brought into the model frame with the same :class:`SquareFrame` resampling as
    the image (anti-aliased) and thresholded at 0.5.

    Items are dicts: ``image`` (1, S, S) float32 in [0, 1], ``masks`` (C, S, S) float32 0/1 in
    the order of ``keys``, ``index`` int (into :attr:`cases`, :attr:`frames`).

    Args:
        cases: labelled cases (each must have a mask for every key).
        image_size: side S of the model frame.
        augment: optional :class:`MaskAugment` (training only).
        keys: structures, one output channel each.
        keep_original: also keep the original-frame masks (:attr:`original_masks`), for
            validation in the original frame.
    """

    def __init__(self, cases: Sequence[SegCase], image_size: int, augment: Optional[MaskAugment] = None,
                 keys: Sequence[str] = PIXEL_KEYS, keep_original: bool = False):
        from anatomix.io.read import read_radiograph

        self.cases, self.size, self.augment, self.keys = list(cases), image_size, augment, tuple(keys)
        self.images: List[np.ndarray] = []
        self.targets: List[np.ndarray] = []
        self.frames: List[SquareFrame] = []
        self.original_masks: List[Dict[str, np.ndarray]] = []
        for case in self.cases:
            image, frame = to_model_frame(read_radiograph(case.image).pixels, image_size)
            masks = case_masks(case, self.keys)
            self.images.append(image)
            self.frames.append(frame)
            self.targets.append(np.stack([frame.image_to_model(masks[k].astype(np.float32)) >= 0.5
                                          for k in self.keys]).astype(np.uint8))
            if keep_original:
                self.original_masks.append(masks)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        image, masks = self.images[i], self.targets[i].astype(np.float32)
        if self.augment is not None:
            image, masks = self.augment(image, masks)
        return {"image": torch.from_numpy(np.ascontiguousarray(image))[None],
                "masks": torch.from_numpy(np.ascontiguousarray(masks)),
                "index": torch.tensor(i)}
