"""Images and per-structure mask targets in the model frame, for the pixel segmenters."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from anatomix.anatomy import STRUCTURE_KEYS
from anatomix.data.augment import MaskAugment
from anatomix.data.cases import SegCase
from anatomix.data.preprocess import to_model_frame
from anatomix.io.geometry import SquareFrame
from anatomix.io.read import read_mask

"""Default output channels of the pixel models (multi-label: one sigmoid channel each)."""


def case_masks(case: SegCase, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    """{key: (H, W) bool} original-frame masks of a case, for the ``keys`` it labels (partial
    labels: a structure without a mask file is left out, not taken as empty)."""
    return {k: read_mask(case.masks[k]) for k in keys if k in case.masks}


class MaskDataset(Dataset):
    """Preloaded images and mask targets in the (S, S) model frame.

    Masks are brought into the model frame with the same :class:`SquareFrame` resampling as
    the image (anti-aliased) and thresholded at 0.5.

    Items are dicts: ``image`` (1, S, S) float32 in [0, 1], ``masks`` (C, S, S) float32 0/1 in
    the order of ``keys`` (zeros for a structure the case does not label), ``has_mask`` (C,)
    bool (which channels are labelled: the loss ignores the others), ``index`` int (into
    :attr:`cases`, :attr:`frames`).

    Args:
        cases: labelled cases (partial labels allowed).
        image_size: side S of the model frame.
        augment: optional :class:`MaskAugment` (training only).
        keys: structures, one output channel each.
        keep_original: also keep the original-frame masks (:attr:`original_masks`, labelled
            structures only), for validation in the original frame.
        crop_borders: preprocess with the exposed-field crop (as the model will at inference).
    """

    def __init__(self, cases: Sequence[SegCase], image_size: int, augment: Optional[MaskAugment] = None,
                 keys: Sequence[str] = STRUCTURE_KEYS, keep_original: bool = False, crop_borders: bool = False):
        from anatomix.io.read import read_radiograph

        self.cases, self.size, self.augment, self.keys = list(cases), image_size, augment, tuple(keys)
        self.images: List[np.ndarray] = []
        self.targets: List[np.ndarray] = []
        self.has_mask = np.zeros((len(self.cases), len(self.keys)), bool)
        self.frames: List[SquareFrame] = []
        self.original_masks: List[Dict[str, np.ndarray]] = []
        for i, case in enumerate(self.cases):
            image, frame = to_model_frame(read_radiograph(case.image).pixels, image_size, crop_borders)
            masks = case_masks(case, self.keys)
            self.images.append(image)
            self.frames.append(frame)
            target = np.zeros((len(self.keys), image_size, image_size), np.uint8)
            for c, k in enumerate(self.keys):
                if k in masks:
                    target[c] = frame.image_to_model(masks[k].astype(np.float32)) >= 0.5
                    self.has_mask[i, c] = True
            self.targets.append(target)
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
                "has_mask": torch.from_numpy(self.has_mask[i].copy()),
                "index": torch.tensor(i)}
