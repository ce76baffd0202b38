"""The detector: preprocessing + model + residual/aggregation settings + calibration, in one file.

Everything that decides a score travels inside the saved file (anomalib's lesson): the model
frame size, the intensity handling, the residual kind, the smoothing, the aggregation, each
region's normalisation and threshold. Loading the file and scoring one new image therefore
reproduces the evaluation exactly.

Example:
    >>> det = Detector.load("detector.pt")
    >>> res = det.score([read_radiograph("cxr.png")])[0]
    >>> res.score, res.anomalous, res.regions
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anatomix.anomaly import calibration as cal
from anatomix.anomaly.scoring import (
    REDUCTIONS,
    RESIDUALS,
    is_residual,
    masks_to_model,
    region_scores,
    smooth,
)
from anatomix.errors import UsageError

FORMAT = "anatomix-anomaly-detector"
FORMAT_VERSION = 1
ENSEMBLE_FORMAT = "anatomix-anomaly-ensemble"  # :mod:`anatomix.anomaly.ensemble` files
ZONES_FORMAT = "anatomix-anomaly-zones"  # :mod:`anatomix.anomaly.zones` files


def preprocess(pixels: np.ndarray, image_size: int):
    """The detectors' preprocessing: pad to square, resize to ``image_size``, clip to [0, 1].

    Returns:
        (model-frame image ``(S, S)`` float32, the :class:`~anatomix.io.geometry.SquareFrame`).
    """
    from anatomix.io.geometry import SquareFrame

    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 2:
        raise UsageError(f"expected a 2-D image, got shape {pixels.shape}")
    frame = SquareFrame(int(pixels.shape[0]), int(pixels.shape[1]), int(image_size))
    return np.clip(frame.image_to_model(pixels), 0.0, 1.0).astype(np.float32), frame


@dataclass
class ScoringConfig:
    """How a residual map becomes a score.

    The defaults (``ssim`` residual, mean of the top 5 %) suit a detector without a critic (what
    the pediatric validation set chose for a plain ``ae``). With a critic the validation set
    chose ``ssim+critic`` (mean) for every method, which is what ``anatomix anomaly fit`` uses
    by default; see ``bench/results/anomaly_pediatric.md``.

    Attributes:
        residual: ``auto`` (the model's own map) | ``l2`` | ``l1`` | ``ssim`` | ``l2+ssim`` |
            ``feature`` | ``critic`` (the realness critic's map, :mod:`anatomix.anomaly.critic`)
            | ``<residual>+critic`` (e.g. ``ssim+critic``: the sum of the two maps, each turned
            into a z-score by the mean and standard deviation of its image-mean over held-out
            normals, ``Detector.component_stats``).
        reduce: ``mean`` | ``max`` | ``topk`` aggregation inside a region.
        topk: percent of the region's highest values averaged by ``topk``.
        smooth_sigma: Gaussian smoothing of the map, in model pixels (0 = none).
        primary: region whose score is *the* score when masks are given and that region is
            calibrated (``lungs``, ``anatomy``, ...); otherwise ``image`` is used.
        target_fpr: the false-positive rate the thresholds aim at.
        pixel_norm: turn maps into per-pixel z-scores against normal maps (``pixel_stats``:
            mean and standard deviation of every model-frame pixel's residual over normal
            images), so places that every normal reconstructs badly (diaphragm, heart border,
            trachea) stop dominating the map.
    """

    residual: str = "ssim"
    reduce: str = "topk"
    topk: float = 5.0
    smooth_sigma: float = 1.0
    primary: str = "lungs"
    target_fpr: float = 0.05
    pixel_norm: bool = False

    def __post_init__(self) -> None:
        if not is_residual(self.residual):
            raise UsageError(f"unknown residual {self.residual!r}; choose one of {RESIDUALS} "
                             f"or <one of them>+critic")
        if self.reduce not in REDUCTIONS:
            raise UsageError(f"unknown reduction {self.reduce!r}; choose one of {REDUCTIONS}")


@dataclass
class RegionScoring:
    """What a :class:`ScoringConfig` says to the commands, for detectors that have no residual map of
    their own to configure (ensembles, :mod:`anatomix.anomaly.zones`): the region whose score is *the*
    score when masks are given, and the target false-positive rate of the thresholds."""

    primary: str = "anatomy"
    target_fpr: float = 0.05


@dataclass
class AnomalyResult:
    """The verdict on one image.

    Attributes:
        image_id, path: the radiograph's id and file.
        score: normalised score of ``score_region`` (higher = more anomalous; 0 is the mean of
            held-out normals, 1 one standard deviation above).
        anomalous: ``score > threshold`` of that region's calibration.
        score_region: the region the score comes from (``lungs``, ``image``, ...).
        regions: normalised score of every calibrated region available for this image.
        raw: raw (un-normalised) residual score of every available region.
        heatmap: residual map in the ORIGINAL frame (H, W), when asked for.
        model_map: residual map in the model frame (S, S), when asked for.
        mask_source: ``given`` (masks passed in), ``prior`` (the detector's fixed field prior)
            or ``none`` (whole image only).
    """

    image_id: str
    path: str | None
    score: float
    anomalous: bool
    score_region: str
    threshold: float
    regions: dict[str, float] = field(default_factory=dict)
    raw: dict[str, float] = field(default_factory=dict)
    heatmap: np.ndarray | None = None
    model_map: np.ndarray | None = None
    mask_source: str = "none"


class Detector:
    """A fitted normal-only anomaly detector.

    Args:
        model: an :class:`~anatomix.anomaly.models.base.AnomalyModel`.
        scoring: :class:`ScoringConfig`.
        calibration: region -> calibration dict (see :mod:`anatomix.anomaly.calibration`).
        meta: free-form facts (training data, epochs, timings) kept in the file.
        prior_masks: optional model-frame structure masks (``{"lungR", "lungL", "heart"}`` ->
            bool ``(S, S)``), a fixed anatomical field used for every image that comes without
            masks, at calibration and at scoring alike (so its thresholds hold). Per-image masks,
            when given, take precedence.
        critic: optional :class:`~anatomix.anomaly.critic.PatchCritic` fitted on the same
            normals (needed by the ``critic`` residuals).
    """

    #: it scores without masks (whole image); :class:`~anatomix.anomaly.zones.ZoneDetector` does not
    needs_masks = False

    def __init__(self, model, scoring: ScoringConfig | None = None,
                 calibration: dict[str, dict[str, Any]] | None = None,
                 meta: dict[str, Any] | None = None,
                 prior_masks: Mapping[str, np.ndarray] | None = None, critic=None) -> None:
        self.model = model.eval()
        self.critic = None if critic is None else critic.eval()
        self.scoring = scoring or ScoringConfig()
        self.calibration: dict[str, dict[str, Any]] = dict(calibration or {})
        self.meta: dict[str, Any] = dict(meta or {})
        self.prior_masks = None if prior_masks is None else {k: np.asarray(v, dtype=bool)
                                                              for k, v in prior_masks.items()}
        #: (mean, std) of normal residual maps per model-frame pixel, for ``scoring.pixel_norm``
        self.pixel_stats: tuple | None = None
        #: part of a ``<residual>+critic`` sum -> (mean, std) of its image-mean over held-out normals
        self.component_stats: dict[str, tuple[float, float]] = {}

    # -- basics -----------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.model.method

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def __repr__(self) -> str:
        return (f"Detector(method={self.method!r}, image_size={self.image_size}, "
                f"scoring={self.scoring}, calibrated={sorted(self.calibration)})")

    def preprocess(self, pixels: np.ndarray):
        """Original-frame pixels ``(H, W)`` in [0, 1] -> (model-frame image ``(S, S)``, frame)."""
        return preprocess(pixels, self.image_size)

    def _parts(self) -> list[str]:
        """The maps that ``scoring.residual`` sums (one entry unless ``...+critic``)."""
        r = self.scoring.residual
        return [r[: -len("+critic")], "critic"] if r.endswith("+critic") else [r]

    def _part_maps(self, images: np.ndarray, part: str, batch_size: int) -> np.ndarray:
        """One part's smoothed maps ``(B, S, S)`` of model-frame images ``(B, S, S)``."""
        import torch

        from anatomix.anomaly.critic import critic_map

        if part == "critic" and self.critic is None:
            raise UsageError(f"residual {self.scoring.residual!r} needs a critic; fit the detector "
                               f"with critic epochs > 0")
        out = []
        dev = next(self.model.parameters()).device
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(images[i:i + batch_size])[:, None].to(dev)
                if part == "critic":
                    m = critic_map(self.critic.to(dev), x)
                else:
                    m = self.model.anomaly_map(x, part)
                out.append(m[:, 0].float().cpu().numpy())
        maps = np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size), np.float32)
        return smooth(maps, self.scoring.smooth_sigma)

    def _missing_component_stats(self) -> bool:
        """True when ``scoring.residual`` sums parts whose normal statistics are not set."""
        parts = self._parts()
        return len(parts) > 1 and set(self.component_stats) != set(parts)

    def set_component_stats(self, images: np.ndarray, batch_size: int = 64) -> None:
        """Mean and standard deviation of each summed part's image-mean over NORMAL images."""
        parts = self._parts()
        self.component_stats = {}
        if len(parts) > 1:
            for p in parts:
                v = self._part_maps(np.asarray(images, dtype=np.float32), p, batch_size).mean((1, 2))
                self.component_stats[p] = (float(v.mean()), float(max(v.std(), 1e-8)))

    def model_maps(self, images: np.ndarray, batch_size: int = 64, normalise: bool = True) -> np.ndarray:
        """Residual maps ``(B, S, S)`` of model-frame images ``(B, S, S)`` (smoothed, parts of a
        ``+critic`` sum z-scored and added, and per-pixel normalised when ``scoring.pixel_norm``
        and ``normalise``)."""
        images = np.asarray(images, dtype=np.float32)
        return self._combine(lambda p: self._part_maps(images, p, batch_size), normalise)

    def maps_from_parts(self, raw: Mapping[str, np.ndarray], normalise: bool = True) -> np.ndarray:
        """:meth:`model_maps` from UNSMOOTHED part maps ``{part: (B, S, S)}`` that a network
        computed elsewhere (an exported model: ``anatomix.export``); same smoothing and sums."""
        return self._combine(lambda p: smooth(np.asarray(raw[p], dtype=np.float32), self.scoring.smooth_sigma),
                             normalise)

    def _combine(self, part_maps, normalise: bool) -> np.ndarray:
        """The score map of ``part_maps(part) -> smoothed (B, S, S)`` (see :meth:`model_maps`)."""
        parts = self._parts()
        if len(parts) == 1:
            maps = part_maps(parts[0])
        else:
            if self._missing_component_stats():
                raise UsageError(f"residual {self.scoring.residual!r} sums normalised parts but their "
                                   f"normal statistics are missing; call calibrate() or set_component_stats()")
            maps = sum((part_maps(p) - self.component_stats[p][0])
                       / self.component_stats[p][1] for p in parts).astype(np.float32)
        if normalise and self.scoring.pixel_norm:
            if self.pixel_stats is None:
                raise UsageError("scoring.pixel_norm is on but pixel_stats are missing; call set_pixel_stats()")
            mean, std = self.pixel_stats
            maps = ((maps - mean) / std).astype(np.float32)
        return maps

    def set_pixel_stats(self, images: np.ndarray) -> None:
        """Per-pixel mean and standard deviation of the residual maps of NORMAL images.

        The standard deviation is floored at 10 % of its median so near-constant pixels do
        not blow up.
        """
        maps = self.model_maps(images, normalise=False)
        mean, std = maps.mean(0), maps.std(0)
        std = np.maximum(std, 0.1 * float(np.median(std)) + 1e-12)
        self.pixel_stats = (mean.astype(np.float32), std.astype(np.float32))

    def raw_scores(self, m: np.ndarray, masks_model: Mapping[str, np.ndarray] | None) -> dict[str, float]:
        """Raw region scores of one model-frame map."""
        return region_scores(m, masks_model, self.scoring.reduce, self.scoring.topk)

    # -- calibration ----------------------------------------------------------------------
    def calibrate(self, images: np.ndarray, masks_model: Sequence[Mapping[str, np.ndarray] | None] | None = None,
                  target_fpr: float | None = None) -> dict[str, dict[str, Any]]:
        """Fit every available region's normalisation and threshold on held-out NORMAL images.

        Args:
            images: ``(B, S, S)`` model-frame held-out normals (never abnormal ones).
            masks_model: per image, model-frame structure masks (or None: the detector's
                ``prior_masks`` if any): regions other than ``image`` are calibrated only where
                every image has them.
            target_fpr: overrides ``scoring.target_fpr``.

        What defines the score itself (the normal statistics of the parts of a ``+critic`` sum,
        the per-pixel statistics of ``pixel_norm``) is computed here only when missing, so a
        recalibration on another site's normals moves thresholds and normalisation, never the
        ranking of images.
        """
        if target_fpr is not None:
            self.scoring.target_fpr = float(target_fpr)
        if self._missing_component_stats():
            self.set_component_stats(images)  # part of the score's definition: kept by later recalibrations
        if self.scoring.pixel_norm and self.pixel_stats is None:
            self.set_pixel_stats(images)
        maps = self.model_maps(images)
        masks_model = list(masks_model) if masks_model is not None else [None] * len(maps)
        masks_model = [m if m is not None else self.prior_masks for m in masks_model]
        per_region: dict[str, list[float]] = {}
        for m, mk in zip(maps, masks_model):
            for k, v in self.raw_scores(m, mk).items():
                per_region.setdefault(k, []).append(v)
        self.calibration = {k: cal.fit_region(v, self.scoring.target_fpr)
                            for k, v in per_region.items() if len(v) == len(maps)}
        # a fixed colour scale for heat maps: the 99.5th percentile of held-out normal maps
        self.meta["map_vmax"] = float(np.percentile(maps, 99.5))
        return self.calibration

    def set_target_fpr(self, target_fpr: float) -> None:
        """Move every threshold to another target FPR (from the kept held-out normal scores)."""
        self.scoring.target_fpr = float(target_fpr)
        self.calibration = {k: cal.retarget(c, target_fpr) for k, c in self.calibration.items()}

    # -- scoring --------------------------------------------------------------------------
    def result(self, image_id: str, path, m: np.ndarray, masks_model=None, frame=None,
               keep_maps: bool = False) -> AnomalyResult:
        """Turn one model-frame map into an :class:`AnomalyResult`."""
        if "image" not in self.calibration:
            raise UsageError("detector is not calibrated; call calibrate() with held-out normals")
        source = "given" if masks_model else ("prior" if self.prior_masks else "none")
        if not masks_model:
            masks_model = self.prior_masks
        raw = self.raw_scores(m, masks_model)
        z = {k: cal.normalise(v, self.calibration[k]) for k, v in raw.items()
             if k in self.calibration and np.isfinite(v)}
        region = self.scoring.primary if self.scoring.primary in z else "image"
        thr = float(self.calibration[region]["threshold"])
        heat = frame.map_to_original(m) if (keep_maps and frame is not None) else None
        return AnomalyResult(image_id=image_id, path=None if path is None else str(path), score=z[region],
                             anomalous=bool(z[region] > thr), score_region=region, threshold=thr,
                             regions=z, raw=raw, heatmap=heat, model_map=m if keep_maps else None,
                             mask_source=source)

    def model_results(self, images: np.ndarray, masks_model=None) -> list[AnomalyResult]:
        """Results of model-frame images ``(B, S, S)`` and their model-frame masks (no ids): what an
        ensemble calibrates from."""
        masks_model = list(masks_model) if masks_model is not None else [None] * len(images)
        return [self.result("", None, m, mk) for m, mk in zip(self.model_maps(images), masks_model)]

    def score(self, radiographs: Sequence, masks: Sequence[Mapping[str, np.ndarray] | None] | None = None,
              keep_maps: bool = False, batch_size: int = 64) -> list[AnomalyResult]:
        """Score radiographs (any sizes).

        Args:
            radiographs: :class:`~anatomix.io.Radiograph` records.
            masks: per radiograph, ORIGINAL-frame bool masks ``{"lungR", "lungL", "heart"}``
                or None (whole image).
            keep_maps: also return the heat map (original frame) and the model-frame map.
        """
        masks = list(masks) if masks is not None else [None] * len(radiographs)
        if len(masks) != len(radiographs):
            raise UsageError(f"{len(radiographs)} radiographs but {len(masks)} mask sets")
        pre = [self.preprocess(r.pixels) for r in radiographs]
        maps = self.model_maps(np.stack([p[0] for p in pre]) if pre else np.zeros((0, 1, 1)), batch_size)
        out = []
        for r, (_, frame), m, mk in zip(radiographs, pre, maps, masks):
            out.append(self.result(r.image_id, r.path, m, masks_to_model(mk, frame), frame, keep_maps))
        return out

    # -- persistence ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        import torch

        return {"format": FORMAT, "format_version": FORMAT_VERSION, "method": self.method,
                "model_config": dict(self.model.config),
                "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "scoring": asdict(self.scoring), "calibration": self.calibration, "meta": self.meta,
                "prior_masks": None if self.prior_masks is None else
                {k: torch.from_numpy(v.astype(np.uint8)) for k, v in self.prior_masks.items()},
                "pixel_stats": None if self.pixel_stats is None else [torch.from_numpy(v) for v in self.pixel_stats],
                "critic": None if self.critic is None else
                {"config": dict(self.critic.config),
                 "state_dict": {k: v.detach().cpu() for k, v in self.critic.state_dict().items()}},
                "component_stats": {k: list(v) for k, v in self.component_stats.items()},
                "preprocess": {"frame": "pad-to-square + resize (anatomix.io.geometry.SquareFrame)",
                               "image_size": self.image_size, "intensity": "[0, 1] as read, clipped"}}

    def save(self, path) -> Path:
        """Write the detector atomically (one ``.pt`` file, loadable with ``weights_only=True``)."""
        return save_state(path, self.state())

    @classmethod
    def load(cls, path, device: str = "cpu", trust: bool = False):
        """Read a detector file written by :meth:`save`, an ensemble's
        (:class:`~anatomix.anomaly.ensemble.EnsembleDetector`) or a zones detector's
        (:class:`~anatomix.anomaly.zones.ZoneDetector`); a clear error for anything else.

        Args:
            trust: read a file that needs a full unpickle, which RUNS CODE FROM THE FILE
                (see :func:`anatomix.models.load_checkpoint`); files written by :meth:`save` never do.

        Raises:
            CheckpointError: unreadable, refused, or not an anatomix detector.
        """
        from anatomix.models import load_checkpoint

        path = Path(path)
        return detector_from_state(load_checkpoint(path, trust=trust), path, device)

    @classmethod
    def from_state(cls, state: Mapping[str, Any], path, device: str = "cpu") -> Detector:
        """Rebuild a detector from :meth:`state` (read from ``path``, named in errors).

        Raises:
            CheckpointError: not an anatomix detector, or one this version cannot rebuild.
        """
        from anatomix.anomaly.models import create_model
        from anatomix.errors import CheckpointError

        if state.get("format") != FORMAT:
            raise CheckpointError(path, "not an anatomix anomaly detector")
        try:
            model = create_model(state["method"], **state["model_config"])
        except UsageError as e:
            raise CheckpointError(path, f"not a detector this version can rebuild ({e})") from None
        model.load_state_dict(state["state_dict"])
        prior = state.get("prior_masks")
        prior = None if prior is None else {k: v.numpy().astype(bool) for k, v in prior.items()}
        critic = None
        if state.get("critic") is not None:
            from anatomix.anomaly.critic import PatchCritic

            critic = PatchCritic(**state["critic"]["config"])
            critic.load_state_dict(state["critic"]["state_dict"])
            critic = critic.to(device)
        det = cls(model.to(device), ScoringConfig(**state["scoring"]), state["calibration"], state.get("meta"), prior,
                  critic)
        if state.get("pixel_stats") is not None:
            det.pixel_stats = tuple(v.numpy() for v in state["pixel_stats"])
        det.component_stats = {k: (float(v[0]), float(v[1])) for k, v in (state.get("component_stats") or {}).items()}
        return det


def detector_from_state(state: Mapping[str, Any], path, device: str = "cpu"):
    """The detector a loaded file holds, by its ``format``: a :class:`Detector`, an
    :class:`~anatomix.anomaly.ensemble.EnsembleDetector` or a :class:`~anatomix.anomaly.zones.ZoneDetector`."""
    if state.get("format") == ENSEMBLE_FORMAT:
        from anatomix.anomaly.ensemble import EnsembleDetector

        return EnsembleDetector.from_state(state, path, device)
    if state.get("format") == ZONES_FORMAT:
        from anatomix.anomaly.zones import ZoneDetector

        return ZoneDetector.from_state(state, path, device)
    return Detector.from_state(state, path, device)


def save_state(path, state: Mapping[str, Any]) -> Path:
    """Write a detector's or an ensemble's :meth:`state` atomically as one ``.pt`` file."""
    import torch

    from anatomix.io.atomic import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp:
        torch.save(dict(state), tmp)
    return path


def calibrate_on(detector: Detector, radiographs: Sequence, masks: Sequence[Mapping[str, np.ndarray] | None]) -> None:
    """Calibrate ``detector`` on held-out NORMAL radiographs (original frame) with their ORIGINAL-frame
    masks (``{"lungR", "lungL", "heart"}`` or None each), mapped to its model frame as :meth:`Detector.score`
    maps them, so every masked region it scores is calibrated."""
    pre = [detector.preprocess(r.pixels) for r in radiographs]
    detector.calibrate(np.stack([image for image, _ in pre]),
                       [masks_to_model(m, frame) for (_, frame), m in zip(pre, masks)])
