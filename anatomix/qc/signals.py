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

The *second opinion* (:class:`SecondOpinion`) is the bundled graph and pixel segmenters run on
the image by QC itself, whoever made the checked masks, so the signals mean the same for masks
made by anatomix, by another tool, or by hand. Cost on one CPU thread: about 0.15 s per image
at 512 px (both forward passes and 10 latent draws).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from anatomix.anatomy import STRUCTURE_KEYS, dice

SIGNALS = ("agree", "agree_pair", "node_std", "extra_components", "holes", "area_log", "rca")
"""Column order of :func:`signal_matrix` (the features of :class:`anatomix.qc.quality.DiceModel`)."""


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
            g = self.graph.predict([radiograph])[0]
            p = self.pixel.predict([radiograph])[0]
            std: Dict[str, float] = {}
            if self.samples > 0:
                per_node = self.graph.sample(radiograph, self.samples)[1] / max(radiograph.shape)
                std = {k: float(per_node[sl].mean()) for k, sl in self.graph.template.slices().items()}
        return Opinion(dict(g.masks), dict(p.masks), std)


_BUNDLED: Optional[SecondOpinion] = None
_BUNDLED_LOCK = threading.Lock()


def _components_and_holes(mask: np.ndarray):
    from anatomix.qc.plausibility import count_components, count_holes

    return count_components(mask), count_holes(mask)


def mask_signals(masks: Mapping[str, np.ndarray], rca: Optional[Mapping[str, float]] = None,
                 keys: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    """The signals of every structure that need no second opinion (topology, area, RCA);
    agreement and node std are NaN. Arguments as :func:`structure_signals`."""
    keys = [k for k in STRUCTURE_KEYS if k in masks] if keys is None else list(keys)
    out: Dict[str, Dict[str, float]] = {}
    for k in keys:
        m = np.asarray(masks[k], bool)
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
                      keys: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    """The :data:`SIGNALS` of every structure of one mask set.

    Args:
        masks: {structure: (H, W) bool} checked masks, original frame.
        opinion: the second opinion on the same image (None: agreement and node std are NaN).
        rca: {structure: RCA Dice} (None or a missing key: NaN).
        keys: structures (default: those of :data:`~anatomix.anatomy.STRUCTURE_KEYS` in ``masks``).

    Returns:
        {structure: {signal: value}}; a figure that cannot be computed is NaN.
    """
    out = mask_signals(masks, rca, keys)
    return out if opinion is None else with_opinion(out, masks, opinion)


def signal_matrix(per_structure: Mapping[str, Mapping[str, float]],
                  keys: Optional[Sequence[str]] = None) -> np.ndarray:
    """(len(keys), len(SIGNALS)) float array of :func:`structure_signals` (rows in ``keys`` order)."""
    keys = list(per_structure) if keys is None else list(keys)
    return np.array([[per_structure[k][n] for n in SIGNALS] for k in keys], np.float64).reshape(len(keys), len(SIGNALS))
