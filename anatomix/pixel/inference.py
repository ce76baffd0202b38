"""Pixel segmenter inference: radiographs of any size in, masks (and landmarks traced from
them) in the original frame out. Mirrors :class:`anatomix.graphs.inference.GraphSegmenter`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch

from anatomix.anatomy import LUNGS_HEART, masks_to_landmarks
from anatomix.data.preprocess import to_model_frame
from anatomix.io.record import Radiograph
from anatomix.pixel.postprocess import postprocess_masks
from anatomix.segmentation import Segmentation


class PixelSegmenter:
    """A trained dense segmenter with its preprocessing; deterministic and batch-independent.

    Args:
        model: a network built from ``config`` (put in eval mode here).
        config: its :class:`anatomix.pixel.models.PixelConfig`.
        device: where to run it.
        postprocess: keep the largest component of each structure and fill its holes
            (default); the raw masks stay available with ``keep_raw=True`` in :meth:`predict`.
    """

    family = "pixel"
    model_name: str | None = None  # set by anatomix.models.load_segmenter

    def __init__(self, model: torch.nn.Module, config, device: str | torch.device = "cpu",
                 postprocess: bool = True):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.size = config.image_size
        self.keys = tuple(config.keys)
        self.template = LUNGS_HEART
        self.postprocess = postprocess

    @classmethod
    def from_state(cls, state: dict, path: Path | str, device: str | torch.device = "cpu",
                   trust: bool = False, postprocess: bool = True) -> "PixelSegmenter":
        """Build from a loaded checkpoint (``anatomix train pixel``'s ``best.pt`` or a bundled one).

        Use :func:`anatomix.models.load_segmenter` to load a file: it reads it once, safely.

        Raises:
            CheckpointError: not a pixel-model checkpoint, or contents that do not build one.
        """
        from anatomix.errors import CheckpointError
        from anatomix.pixel.models import PixelConfig

        if state.get("family", "pixel") != "pixel" or "pixel_config" not in state:
            raise CheckpointError(path, f"not a pixel-model checkpoint (family={state.get('family')!r})")
        try:
            config = PixelConfig.from_dict(state["pixel_config"])
            model = config.build()
            model.load_state_dict(state["model"])
        except Exception as e:
            raise CheckpointError(path, f"bad pixel checkpoint ({type(e).__name__}: {e})") from e
        return cls(model, config, device, postprocess)

    @property
    def structures(self) -> tuple[str, ...]:
        """Mask keys of the results (the model's channels)."""
        return tuple(self.keys)

    def prepare(self, radiograph: Radiograph):
        """The model input of one radiograph: ((S, S) float32 image, its frame)."""
        return to_model_frame(radiograph.pixels, self.size, self.config.crop_borders)

    def model_inputs(self, radiographs: Sequence[Radiograph], prepared: Sequence | None = None):
        """((B, 1, S, S) model input on the device, the frame of each radiograph); ``prepared``:
        :meth:`prepare` of each radiograph when already done elsewhere."""
        images, frames = zip(*(prepared or [self.prepare(r) for r in radiographs]))
        x = torch.from_numpy(np.stack(images))[:, None].to(self.device)
        return x, frames

    @torch.no_grad()
    def probabilities(self, radiographs: Sequence[Radiograph]) -> np.ndarray:
        """(B, C, S, S) float32 sigmoid probabilities in the model frame (channel order: ``keys``)."""
        return self.probabilities_of(self.model_inputs(radiographs)[0])

    @torch.no_grad()
    def probabilities_of(self, x: torch.Tensor) -> np.ndarray:
        """(B, C, S, S) float32 sigmoid probabilities of a :meth:`model_inputs` batch."""
        return torch.sigmoid(self.model(x)).cpu().numpy()

    @torch.no_grad()
    def predict(self, radiographs: Sequence[Radiograph], with_masks: bool = True, prepared: Sequence | None = None,
                with_probabilities: bool = False, keep_raw: bool = False,
                postprocess: bool | None = None) -> List[Segmentation]:
        """Segment a batch of radiographs (any sizes). Each result is independent of the others.

        Args:
            radiographs: the images.
            with_masks: part of the :class:`~anatomix.segmentation.Segmenter` protocol; dense
                masks are this family's primary output, so they are always returned.
            prepared: :meth:`prepare` of each radiograph, when already done elsewhere.
            with_probabilities: put the (C, H, W) float32 original-frame probabilities in
                ``extra["probabilities"]`` (with ``extra["keys"]`` naming the channels).
            keep_raw: put the thresholded masks before post-processing in ``extra["raw_masks"]``.
            postprocess: override the segmenter's default.

        Returns:
            One :class:`Segmentation` per radiograph: masks {key: (H, W) bool} and landmarks
            (120, 2) traced from them (lungs+heart template), all in the original frame.
        """
        post = self.postprocess if postprocess is None else postprocess
        x, frames = self.model_inputs(radiographs, prepared)
        prob = self.probabilities_of(x)
        out = []
        for r, frame, p in zip(radiographs, frames, prob):
            original = np.stack([frame.map_to_original(p[c]) for c in range(len(self.keys))])
            raw = {k: original[c] >= self.config.threshold for c, k in enumerate(self.keys)}
            masks = postprocess_masks(raw) if post else raw
            seg = Segmentation(r.image_id, r.path, r.shape, self.template,
                               masks_to_landmarks(masks, self.template, missing="nan"),
                               masks)
            seg.extra["postprocessed"] = bool(post)
            if keep_raw:
                seg.extra["raw_masks"] = raw
            if with_probabilities:
                seg.extra["probabilities"] = original.astype(np.float32)
                seg.extra["keys"] = list(self.keys)
            out.append(seg)
        return out
