"""The result record of every segmenter (in the original image frame) and the Segmenter protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Dict,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    runtime_checkable,
)

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


@runtime_checkable
class Segmenter(Protocol):
    """What every segmenter implements: the graph, pixel and refined families, their ONNX twins.

    :func:`anatomix.models.load_segmenter` returns one; :func:`anatomix.batch.segment_batch`
    and QC call nothing else.

    Attributes:
        family: ``"graph"``, ``"pixel"`` or ``"refined"``.
        template: the landmark template of the results.
        structures: mask keys of the results (the ``masks`` of each :class:`Segmentation`).
        model_name: what it was loaded from (registry name or path), or None; outputs name the
            model by it (:func:`anatomix.models.model_identity`).
    """

    family: str
    template: Template
    model_name: Optional[str]

    @property
    def structures(self) -> Tuple[str, ...]: ...

    def prepare(self, radiograph: Any) -> Any:
        """Per-image preprocessing (model-frame image and its frame): thread-safe, so batch
        readers run it ahead of the model and pass the results to :meth:`predict`."""

    def predict(self, radiographs: Sequence[Any], with_masks: bool = True,
                prepared: Optional[Sequence[Any]] = None) -> List[Segmentation]:
        """One :class:`Segmentation` per radiograph, in its original frame, batch-independent.

        Args:
            radiographs: :class:`~anatomix.io.record.Radiograph` list (any sizes).
            with_masks: also rasterise contour masks (False: the batch's writer threads do it;
                families whose masks are their primary output return them anyway).
            prepared: :meth:`prepare` of each radiograph when done elsewhere.
        """
