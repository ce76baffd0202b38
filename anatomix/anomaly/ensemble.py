"""Ensembles of detectors: the sum of their normalised scores, calibrated once more as a whole.

Detectors that fail on different films (a reconstruction residual with a realness critic at 64 px
and a feature-predicting student at 128 px) add up: each member's region score is already a
z-score against held-out normals, so their plain sum needs no weights to choose (nothing is tuned
on abnormal films). A member marked ``whole_image`` gives its ``image`` score to every region (a
student whose strength is the whole film, not the masked lungs). The sum of every region is
normalised and thresholded again on held-out normals (:mod:`anatomix.anomaly.calibration`), so an
ensemble's ``score``, ``anomalous`` and ``threshold`` mean what a single detector's do.

An :class:`EnsembleDetector` scores, calibrates, saves and loads like a
:class:`~anatomix.anomaly.detector.Detector` (``Detector.load`` reads either file), so
``anatomix anomaly score/calibrate`` take it as they are. Heat maps are the mean of the members'
original-frame maps, each divided by its own normal 99.5th percentile (``map_vmax``). Exports
(ONNX, MONAI Bundle) are per member: export the members' files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anatomix.anomaly import calibration as cal
from anatomix.anomaly.detector import ENSEMBLE_FORMAT as FORMAT
from anatomix.anomaly.detector import (
    AnomalyResult,
    Detector,
    RegionScoring,
    calibrate_on,
    detector_from_state,
    preprocess,
    save_state,
)
from anatomix.errors import CheckpointError, UsageError


class EnsembleDetector:
    """Members (each a calibrated :class:`~anatomix.anomaly.detector.Detector` or
    :class:`~anatomix.anomaly.zones.ZoneDetector`) scored together.

    Args:
        members: the detectors.
        whole_image: per member, True to use its ``image`` score for every region.
        scoring: primary region and target FPR of the sum's thresholds.
        calibration: region -> calibration of the summed z-scores (:meth:`calibrate`).
        meta: free-form facts kept in the file.
    """

    method = "ensemble"

    def __init__(self, members: Sequence[Detector], whole_image: Sequence[bool] | None = None,
                 scoring: RegionScoring | None = None, calibration: dict[str, dict[str, Any]] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        if len(members) < 2:
            raise UsageError(f"an ensemble needs at least two detectors, got {len(members)}")
        self.members = list(members)
        self.whole_image = [bool(w) for w in (whole_image or [False] * len(self.members))]
        if len(self.whole_image) != len(self.members):
            raise UsageError(f"{len(self.members)} members but {len(self.whole_image)} whole_image flags")
        self.scoring = scoring or RegionScoring()
        self.calibration: dict[str, dict[str, Any]] = dict(calibration or {})
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.setdefault("map_vmax", 1.0)  # members' maps are divided by their own vmax

    @property
    def image_size(self) -> int:
        """The largest member frame: :meth:`calibrate` takes model-frame images of this side."""
        return max(m.image_size for m in self.members)

    @property
    def needs_masks(self) -> bool:
        """True when a member cannot score without masks (a :class:`~anatomix.anomaly.zones.ZoneDetector`)."""
        return any(m.needs_masks for m in self.members)

    def __repr__(self) -> str:
        parts = ", ".join(f"{m.method}@{m.image_size}{' (image)' if w else ''}"
                          for m, w in zip(self.members, self.whole_image))
        return f"EnsembleDetector({parts}; calibrated={sorted(self.calibration)})"

    # -- the sum ----------------------------------------------------------------------------
    def summed(self, member_results: Sequence[AnomalyResult]) -> dict[str, float]:
        """Region -> sum of the members' z-scores for one image (regions every member gives)."""
        base = next((r.regions for r, w in zip(member_results, self.whole_image) if not w), {"image": 0.0})
        per_member = [{k: r.regions["image"] for k in base} if w else r.regions
                      for r, w in zip(member_results, self.whole_image)]
        regions = set.intersection(*(set(p) for p in per_member))
        return {k: float(sum(p[k] for p in per_member)) for k in sorted(regions)}

    def _fit(self, sums: Sequence[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
        """Calibrate every region that all held-out normals have from their summed z-scores."""
        regions = set.intersection(*(set(s) for s in sums)) if sums else set()
        self.calibration = {k: cal.fit_region([s[k] for s in sums], self.scoring.target_fpr) for k in sorted(regions)}
        return self.calibration

    def calibrate_radiographs(self, radiographs: Sequence, masks: Sequence | None = None,
                              target_fpr: float | None = None) -> dict[str, dict[str, Any]]:
        """Calibrate the sum on held-out NORMAL radiographs (original frame; masks as in :meth:`score`),
        with the members' own calibrations as they are."""
        if target_fpr is not None:
            self.scoring.target_fpr = float(target_fpr)
        results = [m.score(radiographs, masks) for m in self.members]
        return self._fit([self.summed(rs) for rs in zip(*results)])

    def calibrate(self, images: np.ndarray, masks_model: Sequence | None = None,
                  target_fpr: float | None = None) -> dict[str, dict[str, Any]]:
        """Recalibrate every member, then the sum, on held-out NORMAL model-frame images
        ``(B, S, S)`` of side :attr:`image_size` (``anatomix anomaly calibrate``); smaller members
        see them resized to their own frame, masks likewise."""
        if target_fpr is not None:
            self.scoring.target_fpr = float(target_fpr)
        images = np.asarray(images, dtype=np.float32)
        masks_model = list(masks_model) if masks_model is not None else [None] * len(images)
        results = []
        for m in self.members:
            own = np.stack([preprocess(x, m.image_size)[0] for x in images])
            own_masks = [None if mk is None else
                         {k: preprocess(np.asarray(v, np.float32), m.image_size)[0] >= 0.5 for k, v in mk.items()}
                         for mk in masks_model]
            m.calibrate(own, own_masks, self.scoring.target_fpr)
            results.append(m.model_results(own, own_masks))
        return self._fit([self.summed(rs) for rs in zip(*results)])

    def set_target_fpr(self, target_fpr: float) -> None:
        """Move the sum's and every member's threshold to another target FPR (from the kept
        held-out normal scores; nothing is rescored)."""
        self.scoring.target_fpr = float(target_fpr)
        for m in self.members:
            m.set_target_fpr(target_fpr)
        self.calibration = {k: cal.retarget(c, target_fpr) for k, c in self.calibration.items()}

    # -- scoring ------------------------------------------------------------------------------
    def score(self, radiographs: Sequence, masks: Sequence[Mapping[str, np.ndarray] | None] | None = None,
              keep_maps: bool = False, batch_size: int = 64) -> list[AnomalyResult]:
        """Score radiographs like :meth:`Detector.score`: ``regions`` are the normalised sums,
        ``raw`` the sums themselves, ``heatmap`` the mean of the members' scaled maps."""
        if "image" not in self.calibration:
            raise UsageError("ensemble is not calibrated; call calibrate() with held-out normals")
        results = [m.score(radiographs, masks, keep_maps, batch_size) for m in self.members]
        out = []
        for per in zip(*results):
            raw = self.summed(per)
            z = {k: cal.normalise(v, self.calibration[k]) for k, v in raw.items() if k in self.calibration}
            region = self.scoring.primary if self.scoring.primary in z else "image"
            thr = float(self.calibration[region]["threshold"])
            heat = None
            if keep_maps:
                heat = np.mean([r.heatmap / float(m.meta.get("map_vmax") or 1.0)
                                for r, m in zip(per, self.members)], axis=0).astype(np.float32)
            out.append(AnomalyResult(image_id=per[0].image_id, path=per[0].path, score=z[region],
                                     anomalous=bool(z[region] > thr), score_region=region, threshold=thr,
                                     regions=z, raw=raw, heatmap=heat, mask_source=per[0].mask_source))
        return out

    # -- persistence ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"format": FORMAT, "members": [m.state() for m in self.members], "whole_image": self.whole_image,
                "scoring": {"primary": self.scoring.primary, "target_fpr": self.scoring.target_fpr},
                "calibration": self.calibration, "meta": self.meta}

    def save(self, path) -> Path:
        """Write the ensemble atomically (one ``.pt`` file, loadable with ``weights_only=True``)."""
        return save_state(path, self.state())

    @classmethod
    def from_state(cls, state: Mapping[str, Any], path, device: str = "cpu") -> EnsembleDetector:
        """Rebuild from :meth:`state` (``Detector.load`` calls this for ensemble files)."""
        if state.get("format") != FORMAT:
            raise CheckpointError(path, "not an anatomix anomaly ensemble")
        members = [detector_from_state(s, path, device) for s in state["members"]]
        return cls(members, state["whole_image"], RegionScoring(**state["scoring"]), state["calibration"],
                   state.get("meta"))


def student_detector(rd: Detector, kind: str) -> Detector:
    """A detector of an ``rd`` detector's teacher and its ``kind`` student alone (weights as
    trained: each student has its own loss, so one alone is a trained model), scored on the whole
    image and not yet calibrated (call :meth:`Detector.calibrate` on held-out normals)."""
    state = rd.state()
    kinds = list(state["model_config"].get("students", []))
    if kind not in kinds:
        raise UsageError(f"the detector has no {kind!r} student (it has {kinds})")
    i = kinds.index(kind)
    state["model_config"] = {**state["model_config"], "students": [kind]}
    state["state_dict"] = {k.replace(f"students.{i}.", "students.0.", 1): v for k, v in state["state_dict"].items()
                           if not k.startswith("students.") or k.startswith(f"students.{i}.")}
    state["scoring"] = {**state["scoring"], "primary": "image"}
    state["calibration"] = {}
    state["meta"] = {**state["meta"], "students_kept": [kind]}
    return Detector.from_state(state, "<rd student>")


def added_member(detector: Detector, like: Detector, radiographs: Sequence,
                 masks: Sequence[Mapping[str, np.ndarray] | None]) -> Detector:
    """``detector`` made ready to join an ensemble beside ``like``: scored with ``like``'s setup
    (a copy of its ``scoring``, fixed before any abnormal film is seen) and calibrated on held-out
    NORMAL radiographs with their original-frame masks (:func:`~anatomix.anomaly.detector.calibrate_on`),
    so every masked region of the sum stays calibrated. Returns ``detector``."""
    detector.scoring = dataclasses.replace(like.scoring)
    calibrate_on(detector, radiographs, masks)
    return detector
