"""The topology of a graph model with the boundary accuracy of a pixel model.

A :class:`RefinedSegmenter` runs a graph segmenter (one closed contour per structure, node ``k``
the same anatomical point on every image) and a pixel segmenter (accurate boundaries, but
islands and holes off-domain). Every contour node then moves along its outward normal to the
nearest place where the pixel model's probability crosses 0.5, by at most ``max_shift`` pixels
of the pixel model's frame; the moves are smoothed along the ring. Nodes keep their order and
their anatomical meaning (they only slide across the boundary, never along it), so the result
is still one closed contour per structure. A refined contour that would cross itself is
replaced by the graph's own.

Frames: the refinement runs in the pixel model's frame (its :class:`~anatomix.io.geometry.SquareFrame`,
``(x, y)``, pixel ``(r, c)`` covering ``[c, c+1) x [r, r+1)``); results are in the original frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence

import numpy as np

from anatomix.anatomy import contour_self_intersects, landmarks_to_masks, signed_area
from anatomix.errors import UsageError
from anatomix.io.record import Radiograph
from anatomix.segmentation import Segmentation

GRAPH_LANDMARKS_KEY = "graph_landmarks_model"
"""``Segmentation.extra`` key: (N, 2) float64 (x, y) contour nodes of the graph model before
refinement, template order, in the pixel model's square frame (for QC:
:func:`anatomix.qc.agreement.refined_agreement`)."""

PIXEL_MASKS_KEY = "pixel_masks_model"
"""``Segmentation.extra`` key: {structure key: (S, S) bool} the pixel model's probability at or
above the refinement's iso-line (``RefineConfig.threshold``; no post-processing), in the pixel
model's square frame."""

PIXEL_PROBABILITIES_KEY = "pixel_probabilities_model"
"""``Segmentation.extra`` key: ((C, S, S) float32 sigmoid probabilities of the pixel model in its
square frame, channels in ``pixel.keys`` order; that frame), so QC's second opinion can make the
pixel model's own original-frame masks without running it again
(:meth:`anatomix.qc.signals.SecondOpinion.reuse`)."""


@dataclass(frozen=True)
class RefineConfig:
    """How far and how finely nodes move.

    Attributes:
        max_shift: largest move of a node along its normal, pixels of the pixel model's frame.
        step: sampling step along the normal, same pixels.
        smooth: passes of a [1, 2, 1] / 4 filter over the moves along each ring.
        threshold: the probability iso-line the nodes move to.
    """

    max_shift: float = 8.0
    step: float = 0.25
    smooth: int = 1
    threshold: float = 0.5

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def outward_normals(contour: np.ndarray) -> np.ndarray:
    """Unit outward normals of a closed polygon at its nodes (central differences).

    Shapes:
        contour: (n, 2) (x, y), image axes (y down) -> (n, 2)
    """
    tangent = np.roll(contour, -1, axis=0) - np.roll(contour, 1, axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    if signed_area(contour) < 0:
        normal = -normal
    return normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)


def boundary_offsets(prob: np.ndarray, contour: np.ndarray, config: RefineConfig) -> np.ndarray:
    """Signed distance along each node's outward normal to the nearest inside-to-outside
    crossing of ``config.threshold`` in ``prob``, within ``max_shift``; 0 where there is none.

    Shapes:
        prob: (S, S) probabilities; contour: (n, 2) in the same frame -> (n,)
    """
    from scipy.ndimage import map_coordinates

    t = np.arange(-config.max_shift, config.max_shift + config.step / 2, config.step)
    normals = outward_normals(contour)
    pts = contour[:, None, :] + t[None, :, None] * normals[:, None, :]  # (n, T, 2)
    f = map_coordinates(prob, [pts[..., 1].ravel() - 0.5, pts[..., 0].ravel() - 0.5],
                        order=1, mode="nearest").reshape(pts.shape[:2]) - config.threshold
    offsets = np.zeros(len(contour))
    for i, fi in enumerate(f):
        j = np.flatnonzero((fi[:-1] > 0) & (fi[1:] <= 0))  # inside -> outside, going outward
        if j.size == 0:
            continue
        crossing = t[j] + config.step * fi[j] / (fi[j] - fi[j + 1])
        offsets[i] = crossing[np.argmin(np.abs(crossing))]
    return offsets


def refine_contour(prob: np.ndarray, contour: np.ndarray, config: RefineConfig) -> np.ndarray:
    """One structure's contour moved onto the pixel model's boundary (see the module docstring).

    Shapes:
        prob: (S, S); contour: (n, 2) model-frame (x, y) -> (n, 2)
    """
    offsets = boundary_offsets(prob, contour, config)
    for _ in range(config.smooth):
        offsets = 0.25 * np.roll(offsets, 1) + 0.5 * offsets + 0.25 * np.roll(offsets, -1)
    refined = contour + offsets[:, None] * outward_normals(contour)
    return contour if contour_self_intersects(refined) else refined


class RefinedSegmenter:
    """Graph contours refined towards a pixel model's boundaries.

    Args:
        graph: a :class:`~anatomix.graphs.inference.GraphSegmenter`.
        pixel: a :class:`~anatomix.pixel.inference.PixelSegmenter` whose channels include
            every structure of the graph's template.
        config: :class:`RefineConfig`.
    """

    family = "refined"
    model_name: str | None = None  # set by anatomix.models.load_segmenter

    def __init__(self, graph, pixel, config: RefineConfig = RefineConfig()):
        missing = set(graph.template.keys) - set(pixel.keys)
        if missing:
            raise UsageError(f"the pixel model has no channel for {sorted(missing)}")
        self.graph, self.pixel, self.config = graph, pixel, config
        self.template = graph.template

    @classmethod
    def from_state(cls, state: Dict[str, Any], path, device="cpu", trust: bool = False) -> "RefinedSegmenter":
        """Build from a loaded checkpoint written by :func:`save_refined`: loads the graph and
        pixel models it names (registry names, or paths relative to its folder).

        Raises:
            CheckpointError: a malformed file, or models of the wrong families.
        """
        from pathlib import Path

        from anatomix.errors import CheckpointError
        from anatomix.models import REGISTRY, load_segmenter

        def ref(name: str) -> str:
            return name if name in REGISTRY else str(Path(path).parent / name)

        try:
            graph = load_segmenter(ref(state["graph"]), device, trust)
            pixel = load_segmenter(ref(state["pixel"]), device, trust)
            config = RefineConfig(**state.get("refine_config", {}))
        except (KeyError, TypeError) as e:
            raise CheckpointError(path, f"bad refined-segmenter checkpoint ({type(e).__name__}: {e})") from e
        if graph.family != "graph" or pixel.family != "pixel":
            raise CheckpointError(path, f"needs a graph and a pixel model, got {graph.family!r} and {pixel.family!r}")
        return cls(graph, pixel, config)

    @property
    def structures(self) -> tuple[str, ...]:
        """Mask keys of the results (the graph template's structures)."""
        return tuple(self.template.keys)

    @property
    def uncertainty_samples(self) -> int:
        return self.graph.uncertainty_samples

    @uncertainty_samples.setter
    def uncertainty_samples(self, n: int) -> None:
        self.graph.uncertainty_samples = n

    def sample(self, radiograph: Radiograph, n: int = 50, seed: int = 0):
        """The graph model's node-wise uncertainty (see ``GraphSegmenter.sample``)."""
        return self.graph.sample(radiograph, n, seed)

    @property
    def _shared_input(self) -> bool:
        """Do both models see the same model-frame image (same size and preprocessing)?"""
        g, p = self.graph.config, self.pixel.config
        return g.image_size == p.image_size and g.crop_borders == p.crop_borders

    def prepare(self, radiograph: Radiograph):
        """Both models' inputs of one radiograph: (graph's ``prepare``, pixel's ``prepare`` or
        None when it is the same image); batch readers call this in their threads."""
        return self.graph.prepare(radiograph), None if self._shared_input else self.pixel.prepare(radiograph)

    def predict(self, radiographs: Sequence[Radiograph], with_masks: bool = True,
                prepared: Sequence | None = None) -> List[Segmentation]:
        """Segment a batch (any sizes); results in each original frame, batch-independent.

        Args:
            radiographs: the images.
            with_masks: also rasterise the refined contours (the batch writers do it otherwise).
            prepared: :meth:`prepare` of each radiograph, when already done elsewhere.
        """
        graph_in, pixel_in = zip(*(prepared or [self.prepare(r) for r in radiographs]))
        graph_segs = self.graph.predict(radiographs, with_masks=False, prepared=graph_in)
        x, frames = self.pixel.model_inputs(radiographs, graph_in if pixel_in[0] is None else pixel_in)
        probs = self.pixel.probabilities_of(x)
        channel = {k: c for c, k in enumerate(self.pixel.keys)}
        out = []
        for r, seg, frame, prob in zip(radiographs, graph_segs, frames, probs):
            model_xy = frame.points_to_model(seg.landmarks)
            refined = model_xy.copy()
            for key, sl in self.template.slices().items():
                refined[sl] = refine_contour(prob[channel[key]], model_xy[sl], self.config)
            xy = frame.points_to_original(refined)
            masks = landmarks_to_masks(xy, r.shape, self.template) if with_masks else {}
            own = {GRAPH_LANDMARKS_KEY: model_xy,  # both models' own results, pixel-model frame
                   PIXEL_MASKS_KEY: {k: prob[channel[k]] >= self.config.threshold for k in self.template.keys},
                   PIXEL_PROBABILITIES_KEY: (prob, frame)}
            out.append(Segmentation(r.image_id, r.path, r.shape, self.template, xy, masks,
                                    node_std=seg.node_std, extra=own))
        return out


def save_refined(path, graph: str, pixel: str, config: RefineConfig = RefineConfig()) -> None:
    """Write a refined-segmenter checkpoint: it names its two models, it does not copy them.

    Args:
        path: destination ``.pt`` (loads with ``weights_only=True``).
        graph, pixel: registry names, or checkpoint paths relative to ``path``'s folder.
        config: the refinement settings.
    """
    from pathlib import Path

    from anatomix.models import save_checkpoint

    save_checkpoint(Path(path), {"family": "refined", "graph": str(graph), "pixel": str(pixel),
                                 "refine_config": config.to_dict()})
