"""Pixel segmenter inference: radiographs of any size in, masks (and landmarks traced from
them) in the original frame out. Mirrors :class:`anatomix.graphs.inference.GraphSegmenter`."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from anatomix.anatomy import LUNGS_HEART, STRUCTURE_BY_KEY, Template, mask_to_contour
from anatomix.data.preprocess import to_model_frame
from anatomix.io.record import Radiograph
from anatomix.pixel.postprocess import postprocess_masks
from anatomix.segmentation import Segmentation


def masks_to_template_landmarks(masks: Dict[str, np.ndarray], template: Template = LUNGS_HEART) -> np.ndarray:
    """Trace {key: (H, W) mask} into (n_nodes, 2) CheXmask-style landmarks in template order.

    Each structure goes through :func:`anatomix.anatomy.mask_to_contour` (largest component,
    sub-pixel boundary, resampled to the template's node count, template direction and start).
    A structure whose mask is empty or missing gets NaN nodes.
    """
    parts = []
    for s in template.structures:
        m = masks.get(s.key)
        if m is None or not np.any(m):
            parts.append(np.full((s.count, 2), np.nan))
        else:
            parts.append(mask_to_contour(m, STRUCTURE_BY_KEY[s.key]))
    return np.concatenate(parts)


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
    def from_checkpoint(cls, path: Path | str, device: str | torch.device = "cpu",
                        postprocess: bool = True, trust: bool = False) -> "PixelSegmenter":
        """Load a checkpoint written by ``anatomix train pixel`` (``best.pt``) or a bundled one.

        ``trust`` allows a file that needs a full unpickle, which RUNS CODE FROM THE FILE
        (:func:`anatomix.models.load_checkpoint` refuses it otherwise, with a CheckpointError).
        """
        from anatomix.models import load_checkpoint
        from anatomix.pixel.models import PixelConfig

        state = load_checkpoint(path, trust=trust)
        if state.get("family", "pixel") != "pixel" or "pixel_config" not in state:
            raise ValueError(f"{path} is not a pixel-model checkpoint (family={state.get('family')!r})")
        config = PixelConfig.from_dict(state["pixel_config"])
        model = config.build()
        model.load_state_dict(state["model"])
        return cls(model, config, device, postprocess)

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
    def predict(self, radiographs: Sequence[Radiograph], with_probabilities: bool = False, keep_raw: bool = False,
                postprocess: bool | None = None) -> List[Segmentation]:
        """Segment a batch of radiographs (any sizes). Each result is independent of the others.

        Args:
            radiographs: the images.
            with_probabilities: put the (C, H, W) float32 original-frame probabilities in
                ``extra["probabilities"]`` (with ``extra["keys"]`` naming the channels).
            keep_raw: put the thresholded masks before post-processing in ``extra["raw_masks"]``.
            postprocess: override the segmenter's default.

        Returns:
            One :class:`Segmentation` per radiograph: masks {key: (H, W) bool} and landmarks
            (120, 2) traced from them (lungs+heart template), all in the original frame.
            Unlike the graph segmenter there is no ``with_masks``: the dense masks are this
            family's primary output (the batch writers use them as they are).
        """
        post = self.postprocess if postprocess is None else postprocess
        x, frames = self.model_inputs(radiographs)
        prob = self.probabilities_of(x)
        out = []
        for r, frame, p in zip(radiographs, frames, prob):
            original = np.stack([frame.map_to_original(p[c]) for c in range(len(self.keys))])
            raw = {k: original[c] >= self.config.threshold for c, k in enumerate(self.keys)}
            masks = postprocess_masks(raw) if post else raw
            seg = Segmentation(r.image_id, r.path, r.shape, self.template,
                               masks_to_template_landmarks(masks, self.template),
                               masks)
            seg.extra["postprocessed"] = bool(post)
            if keep_raw:
                seg.extra["raw_masks"] = raw
            if with_probabilities:
                seg.extra["probabilities"] = original.astype(np.float32)
                seg.extra["keys"] = list(self.keys)
            out.append(seg)
        return out
