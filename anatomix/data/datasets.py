"""Torch datasets over labelled cases, preloaded in the model frame."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from anatomix.anatomy import Template, masks_to_landmarks
from anatomix.data.augment import LandmarkAugment
from anatomix.data.cases import SegCase
from anatomix.data.preprocess import to_model_frame
from anatomix.io.read import read_mask


def case_landmarks(case: SegCase, template: Template) -> np.ndarray:
    """(n_nodes, 2) landmarks of a case in its original frame: from the ``.npy`` when there
    is one (its first ``n_nodes`` rows), else traced from the masks."""
    if case.landmarks is not None:
        return np.load(case.landmarks)[: template.n_nodes].astype(np.float64)
    return masks_to_landmarks({k: read_mask(case.masks[k]) for k in template.keys}, template)


class LandmarkDataset(Dataset):
    """Images and landmark targets in the model frame.

    Items are dicts: ``image`` (1, S, S) float32, ``landmarks`` (N, 2) float32 normalised to
    [0, 1] of the model frame (x / S, y / S), ``index`` int.
    """

    def __init__(self, cases: Sequence[SegCase], template: Template, image_size: int,
                 augment: Optional[LandmarkAugment] = None):
        from anatomix.io.read import read_radiograph

        self.cases, self.template, self.size, self.augment = list(cases), template, image_size, augment
        self.images: List[np.ndarray] = []
        self.targets: List[np.ndarray] = []
        for case in self.cases:
            image, frame = to_model_frame(read_radiograph(case.image).pixels, image_size)
            self.images.append(image)
            self.targets.append(frame.points_to_model(case_landmarks(case, template)).astype(np.float32))

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        image, points = self.images[i], self.targets[i]
        if self.augment is not None:
            image, points = self.augment(image, points)
        return {"image": torch.from_numpy(np.ascontiguousarray(image))[None],
                "landmarks": torch.from_numpy(points / self.size),
                "index": torch.tensor(i)}
