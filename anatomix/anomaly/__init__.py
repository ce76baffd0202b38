"""Normal-only anomaly screening: fit on normal radiographs, flag what deviates and where.

- :mod:`anatomix.anomaly.models`: ``ae``, ``memae``, ``mae``, ``squid``, ``simsid`` (image reconstruction)
  and ``rd`` (students that rebuild a teacher's features) in one registry
  (:data:`~anatomix.anomaly.models.MODELS`) behind :func:`~anatomix.anomaly.models.create_model`;
- :mod:`anatomix.anomaly.teacher`: the feature teacher of ``rd``, pretrained here on normals
  (masked in-painting + denoising);
- :mod:`anatomix.anomaly.selection`: model selection from normals only (synthetic opacities);
- :mod:`anatomix.anomaly.scoring`: residual maps, aggregation inside masks, overlays;
- :mod:`anatomix.anomaly.critic`: the realness critic (SQUID's discriminator, for any model);
- :mod:`anatomix.anomaly.calibration`: normalisation and thresholds from held-out normals;
- :mod:`anatomix.anomaly.detector`: :class:`Detector` (everything in one file, save/load);
- :mod:`anatomix.anomaly.zones`: :class:`~anatomix.anomaly.zones.ZoneDetector` (density and texture
  statistics of the six lung zones, a Gaussian on normals; no training, needs masks);
- :mod:`anatomix.anomaly.ensemble`: :class:`~anatomix.anomaly.ensemble.EnsembleDetector` (the sum of
  members' calibrated scores);
- :mod:`anatomix.anomaly.train`: :func:`fit_detector` (resumable fit + calibration);
- :mod:`anatomix.anomaly.metrics`: AUROC, AP, TPR at fixed FPR, ROC plot;
- :mod:`anatomix.anomaly.run`: fit / calibrate / score / evaluate from paths (what the
  ``anatomix anomaly`` commands call).

Importing this package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anatomix.anomaly.models import METHODS

__all__ = ["METHODS", "AnomalyResult", "Detector", "ScoringConfig", "create_model", "fit_detector"]

if TYPE_CHECKING:  # pragma: no cover
    from anatomix.anomaly.detector import AnomalyResult, Detector, ScoringConfig
    from anatomix.anomaly.models import create_model
    from anatomix.anomaly.train import fit_detector


def __getattr__(name: str):
    if name in ("Detector", "ScoringConfig", "AnomalyResult"):
        from anatomix.anomaly import detector

        return getattr(detector, name)
    if name == "fit_detector":
        from anatomix.anomaly.train import fit_detector

        return fit_detector
    if name == "create_model":
        from anatomix.anomaly.models import create_model

        return create_model
    raise AttributeError(name)
