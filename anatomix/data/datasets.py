"""Torch datasets over labelled cases, preloaded in the model frame, with partial labels."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from anatomix.anatomy import Template, mask_to_contour, masks_to_landmarks
from anatomix.data.augment import LandmarkAugment
from anatomix.data.cases import SegCase
from anatomix.data.preprocess import to_model_frame
from anatomix.io.read import read_mask

BOUNDARY_POINTS = 96
"""Points sampled along each mask boundary (model frame) for the graph model's mask loss."""


def case_landmarks(case: SegCase, template: Template) -> np.ndarray:
    """(n_nodes, 2) landmarks of a case in its original frame: from the ``.npy`` when there
    is one (its first ``n_nodes`` rows), else traced from the masks (every structure needed)."""
    if case.landmarks is not None:
        return np.load(case.landmarks)[: template.n_nodes].astype(np.float64)
    return masks_to_landmarks({k: read_mask(case.masks[k]) for k in template.keys}, template)


class LandmarkDataset(Dataset):
    """Images with landmark and mask-boundary targets in the model frame (graph models).

    Labels may be partial: a case has landmarks (a ``.npy``: JSRT) or not, and a mask for some
    structures of the template or not (cxr-lungs: lungs only). What a case lacks is flagged,
    never filled in, so the loss can skip it.

    Items are dicts:
        ``image`` (1, S, S) float32;
        ``landmarks`` (N, 2) float32 normalised to [0, 1] of the model frame (x / S, y / S),
        zeros when ``has_landmarks`` is False;
        ``has_landmarks`` bool;
        ``boundary`` (K, P, 2) float32 normalised points along the mask boundary of each of the
        template's K structures (zeros where there is no mask), moved by the augmentation
        like the landmarks;
        ``has_boundary`` (K,) bool;
        ``index`` int.

    Args:
        cases: labelled cases.
        template: the landmark template.
        image_size: side S of the model frame.
        augment: optional :class:`LandmarkAugment` (training only).
        crop_borders: preprocess with the exposed-field crop (as the model will at inference).
        boundary_points: P.
        keep_masks: also keep the (S, S) bool model-frame masks per structure
            (:attr:`model_masks`, ``None`` where unlabelled) for validation.
    """

    def __init__(self, cases: Sequence[SegCase], template: Template, image_size: int,
                 augment: Optional[LandmarkAugment] = None, crop_borders: bool = False,
                 boundary_points: int = BOUNDARY_POINTS, keep_masks: bool = False):
        from anatomix.io.read import read_radiograph

        self.cases, self.template, self.size, self.augment = list(cases), template, image_size, augment
        keys = template.keys
        self.images: List[np.ndarray] = []
        self.points: List[np.ndarray] = []  # (N + K * P, 2) model px: landmarks then boundaries
        self.has_landmarks = np.zeros(len(self.cases), bool)
        self.has_boundary = np.zeros((len(self.cases), len(keys)), bool)
        self.model_masks: List[Dict[str, Optional[np.ndarray]]] = []
        n, p = template.n_nodes, boundary_points
        for i, case in enumerate(self.cases):
            image, frame = to_model_frame(read_radiograph(case.image).pixels, image_size, crop_borders)
            pts = np.zeros((n + len(keys) * p, 2))
            if case.landmarks is not None:
                pts[:n] = frame.points_to_model(case_landmarks(case, template))
                self.has_landmarks[i] = True
            masks: Dict[str, Optional[np.ndarray]] = {}
            for k, key in enumerate(keys):
                masks[key] = None
                if key in case.masks:
                    masks[key] = frame.image_to_model(read_mask(case.masks[key]).astype(np.float32)) >= 0.5
                    if masks[key].any():
                        pts[n + k * p: n + (k + 1) * p] = mask_to_contour(masks[key], key, p)
                        self.has_boundary[i, k] = True
            self.images.append(image)
            self.points.append(pts.astype(np.float32))
            if keep_masks:
                self.model_masks.append(masks)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        image, points = self.images[i], self.points[i]
        if self.augment is not None:
            image, points = self.augment(image, points)
        n, k = self.template.n_nodes, len(self.template.keys)
        points = torch.from_numpy(np.ascontiguousarray(points) / self.size).float()
        return {"image": torch.from_numpy(np.ascontiguousarray(image))[None],
                "landmarks": points[:n],
                "has_landmarks": torch.tensor(bool(self.has_landmarks[i])),
                "boundary": points[n:].reshape(k, -1, 2),
                "has_boundary": torch.from_numpy(self.has_boundary[i].copy()),
                "index": torch.tensor(i)}


class SourceBalanced(Dataset):
    """A view of a dataset in which every source has the same share of each epoch.

    Item ``i`` is taken from source ``i mod n_sources``; within a source, cases are visited
    in a fixed shuffled order and repeated as needed. An epoch has ``n_sources x`` the size
    of the largest source unless ``samples_per_epoch`` says otherwise; shuffle it with the
    DataLoader as usual.

    Args:
        dataset: the underlying dataset (``dataset.cases[j].source`` names each item's source).
        samples_per_epoch: epoch length (default: n_sources x largest source).
        seed: seed of the within-source order.
    """

    def __init__(self, dataset: Dataset, samples_per_epoch: Optional[int] = None, seed: int = 0):
        self.dataset = dataset
        sources = sorted({c.source for c in dataset.cases})
        rng = np.random.default_rng(seed)
        self.members = [rng.permutation([j for j, c in enumerate(dataset.cases) if c.source == s])
                        for s in sources]
        self.sources = sources
        self.length = samples_per_epoch or len(sources) * max(len(m) for m in self.members)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        members = self.members[i % len(self.members)]
        return self.dataset[int(members[(i // len(self.members)) % len(members)])]
