"""Graph segmenter inference: radiographs of any size in, contours and masks in the
original frame out."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch

from anatomix.anatomy import TEMPLATES, landmarks_to_masks
from anatomix.data.preprocess import to_model_frame
from anatomix.io.record import Radiograph
from anatomix.segmentation import Segmentation


class GraphSegmenter:
    """A trained HybridGNet with its preprocessing; deterministic and batch-independent.

    Args:
        model: a :class:`anatomix.graphs.model.HybridGNet` (put in eval mode here).
        device: where to run it.
        uncertainty_samples: when > 0, :meth:`predict` also fills ``node_std`` from this many
            latent draws per image (seeded per image, so still batch-independent).
    """

    family = "graph"
    model_name: str | None = None  # set by anatomix.models.load_segmenter

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu",
                 uncertainty_samples: int = 0):
        self.uncertainty_samples = uncertainty_samples
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = model.cfg
        self.template = TEMPLATES.get(self.config.template)
        self.size = self.config.image_size

    @classmethod
    def from_state(cls, state: dict, path: Path | str, device: str | torch.device = "cpu",
                   trust: bool = False) -> "GraphSegmenter":
        """Build from a loaded checkpoint (``anatomix train graph``'s ``best.pt`` or a bundled one).

        Use :func:`anatomix.models.load_segmenter` to load a file: it reads it once, safely.

        Raises:
            CheckpointError: the contents do not build a graph model.
        """
        from anatomix.errors import CheckpointError
        from anatomix.graphs.model import GraphConfig, HybridGNet

        try:
            model = HybridGNet(GraphConfig.from_dict(state["graph_config"]))
            model.load_state_dict(state["model"])
        except Exception as e:
            raise CheckpointError(path, f"bad graph checkpoint ({type(e).__name__}: {e})") from e
        return cls(model, device)

    @property
    def structures(self) -> tuple[str, ...]:
        """Mask keys of the results (the template's structures)."""
        return tuple(self.template.keys)

    def prepare(self, radiograph: Radiograph):
        """The model input of one radiograph: ((S, S) float32 image, its frame). Batch readers
        call this in their threads and pass the results to :meth:`predict` as ``prepared``."""
        return to_model_frame(radiograph.pixels, self.size, self.config.crop_borders)

    def _inputs(self, radiographs: Sequence[Radiograph], prepared=None):
        images, frames = zip(*(prepared or [self.prepare(r) for r in radiographs]))
        x = torch.from_numpy(np.stack(images))[:, None].to(self.device)
        return x, frames

    @torch.no_grad()
    def predict(self, radiographs: Sequence[Radiograph], with_masks: bool = True,
                prepared: Sequence | None = None, samples: int | None = None) -> List[Segmentation]:
        """Segment a batch of radiographs (any sizes). Each result is independent of the others.

        Args:
            radiographs: the images, original frames.
            with_masks: also rasterise the masks (the batch writer does it in its own threads).
            prepared: :meth:`prepare` of each radiograph, when already done elsewhere.
            samples: latent draws per image for ``node_std`` (default :attr:`uncertainty_samples`;
                0: none); the encoder runs once for the mean and the draws.

        Returns:
            One :class:`Segmentation` per radiograph, landmarks and masks in its original frame.
        """
        x, frames = self._inputs(radiographs, prepared)
        samples = self.uncertainty_samples if samples is None else samples
        if samples:
            mean, draws = self.model.mean_and_samples(x, samples, seed=0)
        else:
            mean, draws = self.model(x).landmarks, None
        model_xy = mean.cpu().numpy().astype(np.float64) * self.size
        results = [self._result(r, f, p, with_masks) for r, f, p in zip(radiographs, frames, model_xy)]
        if draws is not None:
            for i, (seg, frame) in enumerate(zip(results, frames)):
                seg.node_std = self._spread(draws[:, i], frame)[1]
        return results

    @torch.no_grad()
    def sample(self, radiograph: Radiograph, n: int = 50, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """Node-wise uncertainty from ``n`` latent draws (CheXmask-U style), reproducible by ``seed``.

        Returns:
            (mean (N, 2) landmarks in original pixels, std (N,) in original pixels: the root
            mean square of the x and y standard deviations of each node).
        """
        x, (frame,) = self._inputs([radiograph])
        return self._draws(x, frame, n, seed)

    def _draws(self, x: torch.Tensor, frame, n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
        """(mean (N, 2), std (N,)) in original pixels of ``n`` draws for one (1, 1, S, S) input."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        return self._spread(self.model.sample(x, n, generator=gen)[:, 0], frame)

    def _spread(self, draws: torch.Tensor, frame) -> Tuple[np.ndarray, np.ndarray]:
        """(mean (N, 2), std (N,)) in original pixels of (n, N, 2) normalised model-frame draws."""
        original = frame.points_to_original(draws.cpu().numpy().astype(np.float64) * self.size)
        return original.mean(axis=0), np.sqrt((original.std(axis=0) ** 2).mean(axis=-1))

    def predict_with_uncertainty(self, radiograph: Radiograph, n: int = 50) -> Segmentation:
        """:meth:`predict` plus ``node_std`` from :meth:`sample`."""
        seg = self.predict([radiograph])[0]
        seg.node_std = self.sample(radiograph, n)[1]
        return seg

    def _result(self, r: Radiograph, frame, model_xy: np.ndarray, with_masks: bool) -> Segmentation:
        xy = frame.points_to_original(model_xy)
        masks = landmarks_to_masks(xy, r.shape, self.template) if with_masks else {}
        return Segmentation(r.image_id, r.path, r.shape, self.template, xy, masks)
