"""The QC of one segmentation: every figure of :data:`QC_COLUMNS` and the verdict, in one call.

Cost per 512-px image on one CPU thread (``bench/results/qc_speed.md``): about 0.2-0.3 s in all;
RCA about 0.09 s (k = 4 references, optimised at 32 px; see :mod:`anatomix.qc.rca`), the second
opinion 0.12 s (0.03 s when taken from a ``refined`` segmentation), plausibility + shape model
10-30 ms.

Columns (``QC_COLUMNS``):

- ``Dice RCA (Max)``, ``Dice RCA (Mean)``: RCA Dice estimates (max / mean over the k references).
- ``rca_similarity``: best global NCC between the registered image and a reference.
- ``rca_references``: ids of the references used, ``|``-joined.
- ``n_components``, ``n_holes``: summed over structures (a perfect lungs+heart mask has 3 and 0).
- ``area_lungR``, ``area_lungL``, ``area_heart``: area fractions of the image.
- ``ctr``: cardiothoracic ratio (max heart width / max thoracic width).
- ``lr_order_ok``, ``heart_inside_thorax``, ``heart_side_ok``: position checks (bool or empty).
- ``self_intersecting``: structures whose contour crosses itself, ``|``-joined.
- ``shape_mahalanobis``: distance to the PCA shape model (about 1 for training shapes).
- ``flip_gain``: only when a segmenter is passed to :func:`assess`: evidence that the image is
  mirrored left-right, comparing this segmentation with the segmenter's result on the flipped
  image (shape-model distance and heart offset, see :func:`anatomix.qc.orientation.flip_gain`);
  > 0: the flipped image gives the more typical anatomy, so the image is probably mirrored.
- ``heart_lung_contrast``: median intensity in the heart minus in the lungs (image range units).
- ``orientation_gain``: how much better a 90/180/270-degree rotation of the image matches the
  references than the image itself (> 0: probably rotated).
- ``node_std_mean``: mean node standard deviation from latent sampling, original pixels.
- ``agree_min``: min over structures of the masks' agreement (Dice) with the second opinion
  (:mod:`anatomix.qc.signals`: the bundled graph and pixel models run on the image by QC).
- ``Predicted Dice``: the bundled :class:`~anatomix.qc.quality.DiceModel`'s estimate of the mask
  set's Dice (mean over its structures); ``pred_dice_<key>``: per structure.
- ``qc_pass``: the verdict; ``qc_reasons``: ``;``-joined reasons it failed; ``qc_notes``: soft
  checks that fired but do not fail a mask with a predicted Dice (see :mod:`anatomix.qc.verdict`).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from anatomix.anatomy import STRUCTURE_KEYS
from anatomix.errors import UsageError
from anatomix.qc.orientation import (
    film_orientation_gain,
    flip_gain,
    lungs_heart_landmarks,
)
from anatomix.qc.quality import bundled_dice_model
from anatomix.qc.rca import References, load_references
from anatomix.qc.verdict import DEFAULT_THRESHOLDS, Thresholds

QC_COLUMNS = [
    "Dice RCA (Max)", "Dice RCA (Mean)", "rca_similarity", "rca_references",
    "n_components", "n_holes", "area_lungR", "area_lungL", "area_heart", "ctr",
    "lr_order_ok", "heart_inside_thorax", "heart_side_ok", "self_intersecting",
    "shape_mahalanobis", "flip_gain", "heart_lung_contrast", "orientation_gain", "node_std_mean",
    "agree_min", "Predicted Dice", *(f"pred_dice_{k}" for k in STRUCTURE_KEYS),
    "qc_pass", "qc_reasons", "qc_notes",
]
"""Ordered QC column names; :func:`assess` returns exactly these keys."""


def assess(seg, pixels: Optional[np.ndarray], node_std: Optional[np.ndarray] = None,
           references: Optional[References] = None, *, run_rca: bool = True, k: int = 4,
           thresholds: Thresholds = DEFAULT_THRESHOLDS, shape_model=None,
           query_embedding: Optional[np.ndarray] = None, segmenter=None, opinion=None,
           dice_model=None, registration=None) -> Dict[str, object]:
    """All QC figures and the verdict of one segmentation.

    Args:
        seg: a :class:`~anatomix.segmentation.Segmentation` (masks in the original frame; its
            landmarks are used for the contour checks when it has lungs+heart nodes, otherwise
            contours are traced from the masks).
        pixels: the (H, W) float32 original-frame image, or None (image-based figures are NaN:
            RCA, similarity, contrast, orientation).
        node_std: (N,) node standard deviations (defaults to ``seg.node_std``).
        references: RCA references (default: the bundled atlases, loaded once).
        run_rca: compute the RCA figures (the slow part).
        k: number of references registered per image.
        thresholds: verdict thresholds.
        shape_model: a :class:`~anatomix.qc.shape_model.ShapeModel` (default: bundled).
        query_embedding: optional vector to pick references with (see :func:`anatomix.qc.rca.rca`).
        segmenter: the segmenter that made ``seg`` (anything with ``predict([Radiograph])``), for
            the mirrored-image test (``flip_gain``): it segments the flipped image once more
            (one extra forward pass). A model that draws the conventional layout on whatever it
            is given makes plausible but wrongly labelled contours on a mirrored radiograph,
            which no mask check can see; its result on the re-flipped image looks more typical.
            When it is the bundled ``refined`` pair, the second opinion is taken from ``seg``
            instead of running the two models again (:meth:`~anatomix.qc.signals.SecondOpinion.reuse`).
        opinion: the :class:`~anatomix.qc.signals.SecondOpinion` run on the image for the
            agreement signals (default: the bundled graph + pixel pair; False: none, their
            signals then count as their calibration mean).
        dice_model: the :class:`~anatomix.qc.quality.DiceModel` (default: bundled; False: no
            predicted Dice, and the verdict falls back to failing on every check).
        registration: RCA's :class:`~anatomix.qc.rca.RegistrationSettings` (default
            :data:`~anatomix.qc.rca.DEFAULT_REGISTRATION`, the one the bundled model is fitted on).

    Returns:
        {column: value} for exactly :data:`QC_COLUMNS`; floats are NaN and booleans None when a
        figure cannot be computed.

    Raises:
        anatomix.errors.UsageError: ``pixels`` and the masks differ in shape.
    """
    from anatomix.qc.plausibility import plausibility
    from anatomix.qc.rca import rca
    from anatomix.qc.shape_model import default_shape_model
    from anatomix.qc.verdict import verdict

    nan = float("nan")
    row: Dict[str, object] = {c: nan for c in QC_COLUMNS}
    masks = {k_: np.asarray(m, bool) for k_, m in seg.masks.items() if k_ in STRUCTURE_KEYS}
    if pixels is not None:
        pixels = np.asarray(pixels, np.float32)
        if masks and pixels.shape != next(iter(masks.values())).shape:
            raise UsageError(f"image shape {pixels.shape} differs from mask shape "
                             f"{next(iter(masks.values())).shape}")
    plaus = None
    if masks:
        lm_for_cross = seg.landmarks if (seg.landmarks is not None and np.size(seg.landmarks)) else None
        plaus = plausibility(masks, lm_for_cross, seg.template if lm_for_cross is not None else None, pixels)
        row.update({
            "n_components": plaus["n_components"], "n_holes": plaus["n_holes"],
            "ctr": plaus["ctr"], "lr_order_ok": plaus["lr_order_ok"],
            "heart_inside_thorax": plaus["heart_inside_thorax"], "heart_side_ok": plaus["heart_side_ok"],
            "self_intersecting": "|".join(plaus["self_intersecting"]),
            "heart_lung_contrast": plaus["heart_lung_contrast"],
        })
        for key in STRUCTURE_KEYS:
            row[f"area_{key}"] = plaus["area"].get(key, nan)
    else:
        row.update({"lr_order_ok": None, "heart_inside_thorax": None, "heart_side_ok": None,
                    "self_intersecting": ""})
    sm = shape_model if shape_model is not None else default_shape_model()
    lm = lungs_heart_landmarks(seg) if masks or seg.landmarks is not None else None
    if sm is not None and lm is not None:
        row["shape_mahalanobis"] = float(sm.distance(lm))
        if segmenter is not None and pixels is not None:
            row["flip_gain"] = flip_gain(_flip_model(segmenter, opinion), pixels, lm, sm)
    row["rca_references"] = ""
    rca_per_structure = None
    if pixels is not None and masks:
        refs = references if references is not None else load_references(None)
        if run_rca:
            r = rca(pixels, masks, refs, k=k, query_embedding=query_embedding,
                    **({} if registration is None else {"registration": registration}))
            for c in ("Dice RCA (Max)", "Dice RCA (Mean)", "rca_similarity", "rca_references"):
                row[c] = r[c]
            rca_per_structure = r["per_structure"]
        row["orientation_gain"] = film_orientation_gain(pixels, refs)
    std = node_std if node_std is not None else getattr(seg, "node_std", None)
    if std is not None and np.size(std):
        row["node_std_mean"] = float(np.mean(std))
    model = bundled_dice_model() if dice_model is None else (dice_model or None)
    if masks:
        _predict(row, masks, pixels, rca_per_structure, opinion, model, seg, segmenter, plaus)
    ok, reasons, notes = verdict(row, plaus, thresholds, sm.threshold if sm is not None else None,
                                 max(seg.shape) if seg.shape else None,
                                 model.threshold if model is not None else None)
    row["qc_pass"] = ok
    row["qc_reasons"] = ";".join(reasons)
    row["qc_notes"] = ";".join(notes)
    return {c: row[c] for c in QC_COLUMNS}


def _flip_model(segmenter, opinion):
    """The model the mirrored-image test runs: ``segmenter``, or, when it is the second opinion's
    own refined pair (``anatomix segment`` with the bundled ``refined``), the opinion's twin of it
    (:meth:`~anatomix.qc.signals.SecondOpinion.twin`: the same landmarks, without the segmenter's
    latent draws and mask rasterisation)."""
    if opinion is False:
        return segmenter
    from anatomix.qc.signals import SecondOpinion

    twin = (opinion or SecondOpinion.bundled()).twin(segmenter)
    return segmenter if twin is None else twin


def _predict(row: Dict[str, object], masks, pixels, rca_per_structure, opinion, model, seg=None,
             segmenter=None, plaus=None) -> None:
    """Fill ``agree_min``, ``Predicted Dice`` and ``pred_dice_<key>`` of ``row`` (in place); the
    second opinion is taken from ``seg`` when ``segmenter`` (which made it) ran the same two
    models (:meth:`~anatomix.qc.signals.SecondOpinion.reuse`), else run on the image."""
    from anatomix.io.record import Radiograph
    from anatomix.qc.signals import SecondOpinion, signal_matrix, structure_signals

    view = None
    if pixels is not None and opinion is not False:
        second = opinion or SecondOpinion.bundled()
        radiograph = Radiograph(pixels)
        view = second.reuse(seg, segmenter, radiograph) if segmenter is not None else None
        if view is None:
            view = second(radiograph)
    sig = structure_signals(masks, view, rca_per_structure, plaus=plaus)
    agree = [s["agree"] for s in sig.values() if np.isfinite(s["agree"])]
    row["agree_min"] = float(min(agree)) if agree else float("nan")
    if model is None or not sig:
        return
    pred = model.predict(signal_matrix(sig, names=model.names))
    for key, p in zip(sig, pred):
        row[f"pred_dice_{key}"] = float(p)
    row["Predicted Dice"] = float(pred.mean())


def format_row(row: Dict[str, object], decimals: int = 4) -> Dict[str, str]:
    """QC values as CSV text: floats rounded, NaN and None empty, booleans ``True``/``False``."""
    out = {}
    for c, v in row.items():
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out[c] = ""
        elif isinstance(v, (bool, np.bool_)):
            out[c] = str(bool(v))
        elif isinstance(v, (float, np.floating)):
            out[c] = f"{float(v):.{decimals}g}" if abs(v) >= 1e4 else f"{round(float(v), decimals)}"
        else:
            out[c] = str(v)
    return out
