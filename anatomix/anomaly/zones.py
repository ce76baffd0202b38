"""Lung-zone statistics: a normal-only detector of density and texture departures inside the lungs.

Each lung (of the masks of a segmenter) is cut into three zones of equal height (upper, middle,
lower; the classic radiological zones). Per zone the detector measures the mean and standard
deviation of the intensity (normalised per film by the 1st and 99th percentile inside lungs and
heart, so exposure and windowing cancel) and the mean absolute Laplacian of Gaussian (sigma 1.5
model pixels: fine texture). These 18 numbers and the 9 right-minus-left differences (an opacity
on one side breaks the symmetry that normals keep) form a 27-vector; a Gaussian fitted on NORMAL
films (standardised features, correlation shrunk towards identity) gives the Mahalanobis distance,
the raw score. Calibration, thresholds and the scores' meaning are those of every detector
(:mod:`anatomix.anomaly.calibration`, fitted on held-out normals only).

It needs masks: it has no whole-image score. Its ``image`` region repeats ``lungs`` so it can
join an :class:`~anatomix.anomaly.ensemble.EnsembleDetector` as a whole-image member. The heat
map paints each zone with the largest absolute z-score of its own features (and of its row's
right-minus-left differences): coarse, but it says which zone departs from the normals.

Frames: features are computed in the detector's model frame (pad to square, resize to
``image_size``: :class:`~anatomix.io.geometry.SquareFrame`), images in [0, 1] and masks there.

Example:
    >>> det = ZoneDetector.fit(images, masks)          # (N, S, S) normals and their model-frame masks
    >>> det.score([radiograph], [original_masks])[0].score
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from anatomix.anomaly import calibration as cal
from anatomix.anomaly.detector import ZONES_FORMAT as FORMAT
from anatomix.anomaly.detector import (
    AnomalyResult,
    RegionScoring,
    preprocess,
    save_state,
)
from anatomix.anomaly.scoring import masks_to_model
from anatomix.errors import CheckpointError, UsageError

FORMAT_VERSION = 1
IMAGE_SIZE = 256
ZONES = 3
LOG_SIGMA = 1.5
#: per zone: intensity mean, intensity standard deviation, mean |Laplacian of Gaussian|
STATS = ("mean", "std", "texture")
N_FEATURES = 2 * ZONES * len(STATS) + ZONES * len(STATS)
REGIONS = ("lungs", "image")


def _zone_masks(lung: np.ndarray) -> list[np.ndarray]:
    """A lung mask ``(S, S)`` cut into ``ZONES`` bands of equal height over its own extent."""
    rows = np.flatnonzero(lung.any(1))
    cuts = np.linspace(rows[0], rows[-1] + 1, ZONES + 1).round().astype(int)
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        z = np.zeros_like(lung)
        z[a:b] = lung[a:b]
        out.append(z)
    return out


def zone_features(image: np.ndarray, masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """The 27 zone statistics of one film.

    Args:
        image: ``(S, S)`` model-frame image in [0, 1].
        masks: model-frame bool masks with ``lungR`` and ``lungL`` (``heart`` optional: it joins the
            intensity normalisation).

    Returns:
        ``(27,)`` float64: for the right then the left lung, upper to lower zone, ``STATS``; then
        right minus left of the same 9. All NaN when a lung mask is missing or has an empty zone.
    """
    from scipy import ndimage

    lungs = [np.asarray(masks.get(k, np.zeros(0)), dtype=bool) for k in ("lungR", "lungL")]
    if any(m.shape != image.shape or m.sum() < 3 * ZONES for m in lungs):
        return np.full(N_FEATURES, np.nan)
    support = lungs[0] | lungs[1]
    if masks.get("heart") is not None:
        support = support | np.asarray(masks["heart"], dtype=bool)
    lo, hi = np.percentile(image[support], [1, 99])
    x = (np.asarray(image, dtype=np.float64) - lo) / max(hi - lo, 1e-6)
    texture = np.abs(ndimage.gaussian_laplace(x, LOG_SIGMA))
    per_lung = []
    for lung in lungs:
        f = []
        for z in _zone_masks(lung):
            if not z.any():
                return np.full(N_FEATURES, np.nan)
            v = x[z]
            f += [v.mean(), v.std(), texture[z].mean()]
        per_lung.append(np.array(f))
    return np.concatenate([per_lung[0], per_lung[1], per_lung[0] - per_lung[1]])


def _zone_of_feature() -> list[tuple[int, ...]]:
    """For each zone (right lung's 3, then left lung's 3), the feature indices that describe it."""
    n = ZONES * len(STATS)
    out = []
    for side in range(2):
        for z in range(ZONES):
            own = [side * n + z * len(STATS) + s for s in range(len(STATS))]
            diff = [2 * n + z * len(STATS) + s for s in range(len(STATS))]
            out.append(tuple(own + diff))
    return out


def fit_gaussian(feats: np.ndarray, shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Gaussian of normal features ``(N, F)``: (mean ``(F,)``, standard deviation ``(F,)``, precision
    ``(F, F)`` = inverse of the correlation matrix shrunk by ``shrinkage`` towards identity)."""
    mean, std = feats.mean(0), feats.std(0) + 1e-8
    corr = np.atleast_2d(np.cov(((feats - mean) / std).T))
    corr = (1.0 - shrinkage) * corr + shrinkage * np.eye(feats.shape[1])
    return mean, std, np.linalg.inv(corr)


def mahalanobis(z: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distances ``(B,)`` of standardised features ``(B, F)`` (NaN where undefined)."""
    return np.einsum("ij,jk,ik->i", z, precision, z)


class ZoneDetector:
    """A Gaussian on the zone statistics of normal films (see the module docstring).

    Args:
        mean, std: ``(27,)`` feature mean and standard deviation over the fit normals.
        precision: ``(27, 27)`` inverse of the shrunk correlation matrix.
        calibration: region -> calibration (:mod:`anatomix.anomaly.calibration`).
        target_fpr: the thresholds' target false-positive rate (``scoring.target_fpr``; the
            primary region is always ``lungs``).
        meta: free-form facts kept in the file.
    """

    method = "zones"
    image_size = IMAGE_SIZE
    needs_masks = True

    def __init__(self, mean, std, precision, calibration: dict[str, dict[str, Any]] | None = None,
                 target_fpr: float = 0.05, meta: dict[str, Any] | None = None) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.precision = np.asarray(precision, dtype=np.float64)
        self.calibration: dict[str, dict[str, Any]] = dict(calibration or {})
        self.scoring = RegionScoring(primary="lungs", target_fpr=float(target_fpr))
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.setdefault("map_vmax", 3.0)  # heat maps are z-scores: 3 standard deviations = full scale

    def __repr__(self) -> str:
        return f"ZoneDetector(image_size={self.image_size}, calibrated={sorted(self.calibration)})"

    def preprocess(self, pixels: np.ndarray):
        """Original-frame pixels ``(H, W)`` in [0, 1] -> (model-frame image ``(S, S)``, frame)."""
        return preprocess(pixels, IMAGE_SIZE)

    # -- fit --------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, images: np.ndarray, masks: Sequence[Mapping[str, np.ndarray] | None], calib_fraction: float = 0.1,
            seed: int = 0, target_fpr: float = 0.05, shrinkage: float = 0.1,
            meta: dict[str, Any] | None = None) -> ZoneDetector:
        """Fit on NORMAL model-frame images ``(N, 256, 256)`` and their model-frame masks; a random
        ``calib_fraction`` (:func:`anatomix.anomaly.train.split_calibration`, ``seed``) is held out and
        calibrates the scores.

        Raises:
            UsageError: masks missing, or fewer than 10 films with usable lungs to fit on.
        """
        from anatomix.anomaly.train import split_calibration

        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise UsageError(f"zones: expected model-frame images (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {images.shape}")
        cls._require_masks(masks, len(images))
        fit_idx, cal_idx = split_calibration(len(images), calib_fraction, seed)
        feats = np.stack([zone_features(images[i], masks[i]) for i in fit_idx])
        feats = feats[np.isfinite(feats).all(1)]
        if len(feats) < 10:
            raise UsageError(f"zones: need at least 10 normal films with both lungs masked, got {len(feats)}")
        det = cls(*fit_gaussian(feats, shrinkage), target_fpr=target_fpr,
                  meta={**(meta or {}), "n_fit": int(len(feats)), "n_calibration": int(len(cal_idx)),
                        "calibration_indices": [int(i) for i in cal_idx],
                        "shrinkage": float(shrinkage), "seed": int(seed)})
        det.calibrate(images[cal_idx], [masks[i] for i in cal_idx])
        return det

    @staticmethod
    def _require_masks(masks, n: int) -> None:
        if masks is None or len(masks) != n or any(m is None for m in masks):
            raise UsageError("the zones detector scores inside the lungs and needs masks for every film: "
                             "pass --segment (the default segmenter) or --masks DIR")

    # -- scores -----------------------------------------------------------------------------------
    def standardised(self, images: np.ndarray, masks: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
        """``(B, 27)`` features of model-frame images as z-scores against the fit normals."""
        feats = np.stack([zone_features(x, m) for x, m in zip(images, masks)]) if len(images) else \
            np.zeros((0, N_FEATURES))
        return (feats - self.mean) / self.std

    def raw(self, z: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances ``(B,)`` of standardised features ``(B, 27)`` (NaN where undefined)."""
        return mahalanobis(z, self.precision)

    def calibrate(self, images: np.ndarray, masks_model: Sequence[Mapping[str, np.ndarray] | None] | None,
                  target_fpr: float | None = None) -> dict[str, dict[str, Any]]:
        """Normalisation and threshold from held-out NORMAL model-frame images and masks."""
        if target_fpr is not None:
            self.scoring.target_fpr = float(target_fpr)
        self._require_masks(masks_model, len(images))
        raw = self.raw(self.standardised(np.asarray(images, dtype=np.float32), masks_model))
        fitted = cal.fit_region(raw, self.scoring.target_fpr)
        self.calibration = {k: fitted for k in REGIONS}
        return self.calibration

    def set_target_fpr(self, target_fpr: float) -> None:
        """Move the threshold to another target FPR (from the kept held-out normal scores)."""
        self.scoring.target_fpr = float(target_fpr)
        fitted = cal.retarget(self.calibration["lungs"], target_fpr)
        self.calibration = {k: fitted for k in REGIONS}

    def _result(self, image_id: str, path, z: np.ndarray, masks_model, frame=None, keep_maps: bool = False):
        if "lungs" not in self.calibration:
            raise UsageError("zones detector is not calibrated; call calibrate() with held-out normals")
        raw = float(self.raw(z[None])[0])
        s = cal.normalise(raw, self.calibration["lungs"])
        thr = float(self.calibration["lungs"]["threshold"])
        model_map = self.zone_map(z, masks_model) if keep_maps else None
        heat = frame.map_to_original(model_map) if (keep_maps and frame is not None) else None
        return AnomalyResult(image_id=image_id, path=None if path is None else str(path), score=s,
                             anomalous=bool(s > thr), score_region="lungs", threshold=thr,
                             regions={k: s for k in REGIONS}, raw={k: raw for k in REGIONS}, heatmap=heat,
                             model_map=model_map, mask_source="given" if masks_model else "none")

    def zone_map(self, z: np.ndarray, masks_model: Mapping[str, np.ndarray]) -> np.ndarray:
        """``(S, S)`` float32: each lung zone painted with the largest |z| of the features that describe it."""
        out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
        if not np.isfinite(z).all():
            return out
        zones = [zm for k in ("lungR", "lungL") for zm in _zone_masks(np.asarray(masks_model[k], dtype=bool))]
        for zm, idx in zip(zones, _zone_of_feature()):
            out[zm] = float(np.abs(z[list(idx)]).max())
        return out

    def model_results(self, images: np.ndarray, masks_model) -> list[AnomalyResult]:
        """Results of model-frame images and masks (no ids): what an ensemble calibrates from."""
        self._require_masks(masks_model, len(images))
        return [self._result("", None, z, m) for z, m in zip(self.standardised(images, masks_model), masks_model)]

    def score(self, radiographs: Sequence, masks: Sequence[Mapping[str, np.ndarray] | None] | None = None,
              keep_maps: bool = False, batch_size: int = 64) -> list[AnomalyResult]:
        """Score radiographs (any sizes) with their ORIGINAL-frame masks, like
        :meth:`anatomix.anomaly.detector.Detector.score`. A film whose lungs are missing or empty
        gets a NaN score (never flagged). ``batch_size`` is accepted for the common interface.

        Raises:
            UsageError: no masks at all (``masks`` None): this detector has no whole-image score.
        """
        if masks is None:
            self._require_masks(None, len(radiographs))
        if len(masks) != len(radiographs):
            raise UsageError(f"{len(radiographs)} radiographs but {len(masks)} mask sets")
        out = []
        for r, mk in zip(radiographs, masks):
            x, frame = self.preprocess(r.pixels)
            mm = masks_to_model(mk, frame) or {}
            z = self.standardised(x[None], [mm])[0]
            out.append(self._result(r.image_id, r.path, z, mm, frame, keep_maps))
        return out

    # -- persistence ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        import torch

        return {"format": FORMAT, "format_version": FORMAT_VERSION, "method": self.method,
                "image_size": self.image_size, "mean": torch.from_numpy(self.mean),
                "std": torch.from_numpy(self.std), "precision": torch.from_numpy(self.precision),
                "target_fpr": self.scoring.target_fpr, "calibration": self.calibration, "meta": self.meta,
                "features": {"zones": ZONES, "stats": list(STATS), "log_sigma": LOG_SIGMA,
                             "intensity": "1st-99th percentile inside lungs and heart -> [0, 1]"}}

    def save(self, path):
        """Write the detector atomically (one ``.pt`` file, loadable with ``weights_only=True``)."""
        return save_state(path, self.state())

    @classmethod
    def from_state(cls, state: Mapping[str, Any], path, device: str = "cpu") -> ZoneDetector:
        """Rebuild from :meth:`state` (``device`` is accepted for the common interface)."""
        if state.get("format") != FORMAT:
            raise CheckpointError(path, "not an anatomix zones detector")
        if state.get("format_version", 1) > FORMAT_VERSION or int(state.get("image_size", 0)) != IMAGE_SIZE:
            raise CheckpointError(path, "a zones detector this version cannot rebuild")
        return cls(state["mean"].numpy(), state["std"].numpy(), state["precision"].numpy(), state["calibration"],
                   state["target_fpr"], state.get("meta"))
