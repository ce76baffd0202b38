"""Per-structure quality signals of one mask set: what the predicted Dice is made of.

Every figure is computed per structure (``lungR``, ``lungL``, ``heart``) in the **original frame**
of the image, so a structure's predicted Dice comes from that structure's evidence only:

=====================  ==========================================================================
signal                 meaning
=====================  ==========================================================================
``agree``              min over the second opinion's graph and pixel masks of the Dice between
                       the checked mask and theirs (a model's own mask agrees fully with itself,
                       so for a graph mask this is its Dice with the pixel mask)
``agree_pair``         Dice between the second opinion's graph and pixel masks: how sure the two
                       models are on this image (low: at least one of them is wrong, so
                       ``agree`` says less)
``node_std``           the second opinion's graph: mean node standard deviation over latent draws
                       of this structure's nodes, in units of the image's longer side
``extra_components``   log(1 + components beyond the first)
``holes``              log(1 + enclosed holes)
``area_log``           |log(area fraction / typical area fraction)|; typical = geometric mean of
                       the training range in :class:`anatomix.qc.verdict.Thresholds`
``rca``                RCA Dice of this structure, mean over the k references (NaN without RCA)
=====================  ==========================================================================

The predicted Dice (:class:`anatomix.qc.quality.DiceModel`) is linear in :data:`FEATURES`: these
signals and two products with ``agree_pair``, ``agree*agree_pair`` and ``rca*agree_pair``, so how
much the model trusts the agreement and how much RCA depends on how sure the second opinion is.
When the opinion's two models disagree with each other (a film drowned in noise, where the pixel
model draws nothing while the graph model is still right), ``agree`` is near 0 whatever the
checked mask, and the prediction rests on RCA instead.

The *second opinion* (:class:`SecondOpinion`) is the bundled graph and pixel segmenters run on
the image by QC itself, whoever made the checked masks, so the signals mean the same for masks
made by anatomix, by another tool, or by hand. Cost on one CPU thread: about 0.12 s per image
at 512 px (both forward passes and 10 latent draws). When the checked masks come from a
:class:`~anatomix.refine.RefinedSegmenter` made of the same two models (``anatomix segment``
with the default ``refined`` model, 10 uncertainty draws), :meth:`SecondOpinion.reuse` takes
both models' results from the segmentation itself (the same masks and node std; about 0.03 s).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from anatomix.anatomy import STRUCTURE_KEYS, dice

SIGNALS = ("agree", "agree_pair", "node_std", "extra_components", "holes", "area_log", "rca")
"""The per-structure signals (columns of the calibration table)."""

FEATURES = SIGNALS + ("agree*agree_pair", "rca*agree_pair")
"""The features of the bundled :class:`anatomix.qc.quality.DiceModel`: the signals and products
of two of them (a name ``a*b`` is the product of signals ``a`` and ``b``; :func:`feature_value`)."""


def feature_value(signals: Mapping[str, float], name: str) -> float:
    """A feature of one structure's ``signals``: the signal ``name``, or for ``a*b`` the product
    of signals ``a`` and ``b`` (NaN when either is)."""
    if "*" in name:
        a, b = name.split("*", 1)
        return float(signals[a]) * float(signals[b])
    return float(signals[name])


def typical_area(key: str) -> float:
    """Typical area fraction of a structure: the geometric mean of its training range."""
    from anatomix.qc.verdict import DEFAULT_THRESHOLDS

    ranges = {k: (lo, hi) for k, lo, hi in DEFAULT_THRESHOLDS.area_ranges}
    lo, hi = ranges[key]
    return float(np.sqrt(lo * hi))


@dataclass
class Opinion:
    """The second opinion on one image, original frame.

    Attributes:
        graph_masks, pixel_masks: {structure: (H, W) bool}.
        node_std: {structure: mean node std / max(H, W)} of the graph model (empty when unknown).
    """

    graph_masks: Dict[str, np.ndarray]
    pixel_masks: Dict[str, np.ndarray]
    node_std: Dict[str, float]


class SecondOpinion:
    """A graph and a pixel segmenter that QC runs on each image (thread-safe: one call at a time).

    Args:
        graph: a graph segmenter (``predict``, ``sample``, ``template``).
        pixel: a pixel segmenter (``predict``).
        samples: latent draws for ``node_std`` (0: none).
    """

    def __init__(self, graph, pixel, samples: int = 10):
        self.graph, self.pixel, self.samples = graph, pixel, samples
        self._lock = threading.Lock()

    @classmethod
    def bundled(cls) -> "SecondOpinion":
        """The bundled ``graph`` and ``pixel`` models (loaded once per process)."""
        global _BUNDLED
        with _BUNDLED_LOCK:
            if _BUNDLED is None:
                from anatomix.models import load_segmenter

                _BUNDLED = cls(load_segmenter("graph"), load_segmenter("pixel"))
        return _BUNDLED

    def __call__(self, radiograph) -> Opinion:
        """Both models' masks (and the graph's node spread) of one :class:`~anatomix.io.record.Radiograph`."""
        from anatomix.qc.rca import _one_thread

        with self._lock, _one_thread():
            if hasattr(self.graph, "prepare") and hasattr(self.pixel, "probabilities_of"):
                # the pixel model's masks as its predict makes them, without tracing landmarks,
                # and the models' shared input prepared once
                # and the graph's latent draws from the encoder pass of its mean
                prepared = self.graph.prepare(radiograph)
                g = self.graph.predict([radiograph], prepared=[prepared], samples=self.samples)[0]
                gc, pc = getattr(self.graph, "config", None), getattr(self.pixel, "config", None)
                shared = (getattr(gc, "image_size", None) == getattr(pc, "image_size", 0)
                          and getattr(gc, "crop_borders", None) == getattr(pc, "crop_borders", 0))
                x, (frame,) = self.pixel.model_inputs([radiograph], [prepared] if shared else None)
                p = self._pixel_masks(self.pixel.probabilities_of(x)[0], frame, tuple(radiograph.shape))
                node_std = g.node_std
            else:
                g = self.graph.predict([radiograph])[0]
                p = dict(self.pixel.predict([radiograph])[0].masks)
                node_std = self.graph.sample(radiograph, self.samples)[1] if self.samples > 0 else None
            std = self._node_std(node_std, radiograph.shape) if self.samples > 0 else {}
        return Opinion(dict(g.masks), p, std)

    def _pixel_masks(self, prob: np.ndarray, frame, shape) -> Dict[str, np.ndarray]:
        """The pixel model's original-frame masks from its (C, S, S) model-frame probabilities,
        as its ``predict`` makes them (resampled, thresholded, post-processed when it does)."""
        from anatomix.pixel.postprocess import postprocess_masks

        raw = {k: frame.map_to_original(prob[c]) >= self.pixel.config.threshold for c, k in enumerate(self.pixel.keys)}
        return postprocess_masks(raw) if self.pixel.postprocess else raw

    def _node_std(self, node_std: np.ndarray, shape) -> Dict[str, float]:
        per_node = np.asarray(node_std, np.float64) / max(shape)
        return {k: float(per_node[sl].mean()) for k, sl in self.graph.template.slices().items()}

    def reuse(self, seg, segmenter, radiograph) -> Optional[Opinion]:
        """This opinion taken from a segmentation that already ran its two models, or None.

        ``segmenter`` made ``seg`` of ``radiograph``; when it is a :class:`~anatomix.refine.RefinedSegmenter`
        whose graph and pixel models are this opinion's own (same class and ``model_name``, or
        the same objects) and ``seg.extra`` holds both models' results, the graph's masks are
        rasterised from its unrefined contours and the pixel model's masks are made from its
        probabilities exactly as its ``predict`` makes them; ``node_std`` is ``seg.node_std``
        when the segmenter drew as many latent samples as this opinion (same seed), else the
        graph model draws them here (as :meth:`__call__` does).

        Returns:
            the same :class:`Opinion` as calling this opinion on the image (up to float error at
            mask boundaries), or None when ``seg`` cannot stand in for it (any other model).
        """
        from anatomix.anatomy import landmarks_to_masks
        from anatomix.refine import GRAPH_LANDMARKS_KEY, PIXEL_PROBABILITIES_KEY

        graph, pixel = getattr(segmenter, "graph", None), getattr(segmenter, "pixel", None)
        extra = getattr(seg, "extra", None) or {}
        xy, probs = extra.get(GRAPH_LANDMARKS_KEY), extra.get(PIXEL_PROBABILITIES_KEY)
        if xy is None or probs is None or not (_same_model(graph, self.graph) and _same_model(pixel, self.pixel)):
            return None
        prob, frame = probs
        shape = tuple(seg.shape)
        g = landmarks_to_masks(frame.points_to_original(np.asarray(xy, np.float64)), shape, self.graph.template)
        p = self._pixel_masks(prob, frame, shape)
        std: Dict[str, float] = {}
        if self.samples > 0:
            node_std = seg.node_std if getattr(segmenter, "uncertainty_samples", 0) == self.samples else None
            if node_std is None or not np.size(node_std):
                from anatomix.qc.rca import _one_thread

                with self._lock, _one_thread():
                    node_std = self.graph.sample(radiograph, self.samples)[1]
            std = self._node_std(node_std, shape)
        return Opinion(g, p, std)

    def twin(self, segmenter):
        """A stand-in for ``segmenter`` made of this opinion's own models, or None.

        When ``segmenter`` is a refined segmenter of this opinion's graph and pixel models (as in
        :meth:`reuse`), the same refinement of the same two models gives the same landmarks; the
        twin draws no latent samples (whatever ``segmenter.uncertainty_samples``) and rasterises
        no masks, so QC's mirrored-image test (:func:`anatomix.qc.orientation.flip_gain`, which
        needs landmarks only) costs one forward pass of each model. Its ``predict`` holds this
        opinion's lock.
        """
        from anatomix.refine import RefinedSegmenter

        config = getattr(segmenter, "config", None)
        if (getattr(segmenter, "family", None) != "refined" or config is None
                or getattr(self.graph, "uncertainty_samples", 0)
                or not (_same_model(getattr(segmenter, "graph", None), self.graph)
                        and _same_model(getattr(segmenter, "pixel", None), self.pixel))):
            return None
        return _Twin(RefinedSegmenter(self.graph, self.pixel, config), self._lock)


class _Twin:
    """``predict`` of a refined segmenter without masks, behind a lock, on one thread."""

    def __init__(self, refined, lock):
        self.refined, self._lock = refined, lock
        self.template = refined.template

    def predict(self, radiographs, *args, **kwargs):
        from anatomix.qc.rca import _one_thread

        with self._lock, _one_thread():
            return self.refined.predict(radiographs, with_masks=False)


_BUNDLED: Optional[SecondOpinion] = None
_BUNDLED_LOCK = threading.Lock()


def _same_model(a, b) -> bool:
    """Are two loaded segmenters the same weights: the same object, or the same class loaded
    from the same registry name or file (``model_name``)?"""
    if a is None or b is None:
        return False
    name = getattr(a, "model_name", None)
    return a is b or (type(a) is type(b) and name is not None and name == getattr(b, "model_name", None))


def _components_and_holes(mask: np.ndarray):
    from anatomix.qc.plausibility import count_components, count_holes

    return count_components(mask), count_holes(mask)


def mask_signals(masks: Mapping[str, np.ndarray], rca: Optional[Mapping[str, float]] = None,
                 keys: Optional[Sequence[str]] = None,
                 plaus: Optional[Mapping[str, object]] = None) -> Dict[str, Dict[str, float]]:
    """The signals of every structure that need no second opinion (topology, area, RCA);
    agreement and node std are NaN. Arguments as :func:`structure_signals`."""
    keys = [k for k in STRUCTURE_KEYS if k in masks] if keys is None else list(keys)
    counted = plaus or {}
    out: Dict[str, Dict[str, float]] = {}
    for k in keys:
        m = np.asarray(masks[k], bool)
        if k in counted.get("components", {}) and k in counted.get("holes", {}):
            comps, holes = counted["components"][k], counted["holes"][k]
        else:
            comps, holes = _components_and_holes(m)
        s = {name: float("nan") for name in SIGNALS}
        s["extra_components"] = float(np.log1p(max(0, comps - 1)))
        s["holes"] = float(np.log1p(holes))
        s["area_log"] = float(abs(np.log((m.mean() + 1e-6) / typical_area(k))))
        if rca is not None:
            s["rca"] = float(rca.get(k, float("nan")))
        out[k] = s
    return out


def with_opinion(signals: Mapping[str, Mapping[str, float]], masks: Mapping[str, np.ndarray],
                 opinion: Opinion) -> Dict[str, Dict[str, float]]:
    """``signals`` (of :func:`mask_signals`) with ``agree``, ``agree_pair`` and ``node_std`` from
    ``opinion`` filled in for every structure the opinion has."""
    out = {k: dict(v) for k, v in signals.items()}
    for k, s in out.items():
        if k in opinion.graph_masks and k in opinion.pixel_masks:
            m, g, p = np.asarray(masks[k], bool), opinion.graph_masks[k], opinion.pixel_masks[k]
            s["agree"] = min(dice(m, g), dice(m, p))
            s["agree_pair"] = dice(g, p)
            s["node_std"] = opinion.node_std.get(k, float("nan"))
    return out


def structure_signals(masks: Mapping[str, np.ndarray], opinion: Optional[Opinion] = None,
                      rca: Optional[Mapping[str, float]] = None,
                      keys: Optional[Sequence[str]] = None,
                      plaus: Optional[Mapping[str, object]] = None) -> Dict[str, Dict[str, float]]:
    """The :data:`SIGNALS` of every structure of one mask set.

    Args:
        masks: {structure: (H, W) bool} checked masks, original frame.
        opinion: the second opinion on the same image (None: agreement and node std are NaN).
        rca: {structure: RCA Dice} (None or a missing key: NaN).
        keys: structures (default: those of :data:`~anatomix.anatomy.STRUCTURE_KEYS` in ``masks``).
        plaus: :func:`anatomix.qc.plausibility.plausibility` of the same masks, when already
            computed: its per-structure ``components`` and ``holes`` are used instead of
            counting again.

    Returns:
        {structure: {signal: value}}; a figure that cannot be computed is NaN.
    """
    out = mask_signals(masks, rca, keys, plaus)
    return out if opinion is None else with_opinion(out, masks, opinion)


def signal_matrix(per_structure: Mapping[str, Mapping[str, float]],
                  keys: Optional[Sequence[str]] = None, names: Sequence[str] = SIGNALS) -> np.ndarray:
    """(len(keys), len(names)) float array of :func:`structure_signals` (rows in ``keys`` order,
    columns the :func:`feature_value` of each of ``names``, e.g. a DiceModel's ``names``)."""
    keys = list(per_structure) if keys is None else list(keys)
    return np.array([[feature_value(per_structure[k], n) for n in names] for k in keys],
                    np.float64).reshape(len(keys), len(names))
