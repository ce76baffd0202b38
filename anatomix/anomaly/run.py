"""Normal-only screening from paths: what ``anatomix anomaly fit / calibrate / score / evaluate`` do.

Each function takes inputs as the command line does (files, folders, globs, ``.txt``/``.csv``
lists), reads them, writes its outputs and returns a record of what it did; the command line
only parses options, calls one of them and prints. A bad input never stops a run: it becomes an
:class:`~anatomix.io.inputs.InputError`, listed in ``errors.csv`` (path, reason) and in the
returned record's ``errors``.

Example:
    >>> from anatomix.anomaly import run
    >>> fitted = run.fit(["normals/"], "detector.pt", epochs=40)
    >>> scored = run.score(["new/"], "scores.csv", detector="detector.pt", maps_dir="maps")
    >>> report = run.evaluate("scores.csv", "labels.csv")
    >>> report.metrics["score"]["auroc"]

Raises (every function): :class:`~anatomix.errors.UsageError` for bad arguments or too few
readable normals, :class:`~anatomix.errors.ReadError` for unreadable labels, scores or masks,
:class:`~anatomix.errors.CheckpointError` for a detector file that cannot be loaded.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anatomix.anatomy import STRUCTURE_KEYS
from anatomix.errors import ReadError, UsageError
from anatomix.io.inputs import ERRORS_NAME, InputError
from anatomix.limits import MAX_PIXELS
from anatomix.models import DEFAULT_DETECTOR

__all__ = ["EvaluationReport", "FitReport", "Normals", "ScoreReport", "calibrate", "evaluate", "fit",
           "fit_order", "masks_from_dir", "read_images", "read_labels", "read_normals", "score", "score_columns",
           "score_row", "segment_masks", "site_mismatch_note", "write_map"]

Log = Callable[[str], None]


# -- inputs ---------------------------------------------------------------------------------------
def read_images(paths: Sequence[Path], ids: Sequence[str], max_pixels: int = MAX_PIXELS):
    """Read radiographs (each at most ``max_pixels``).

    Returns:
        (list of ``(image_id, Radiograph)``, list of :class:`~anatomix.io.inputs.InputError`).
    """
    from anatomix.io import read_radiograph

    ok, errors = [], []
    for p, i in zip(paths, ids):
        try:
            ok.append((i, read_radiograph(p, max_pixels)))
        except ReadError as e:
            errors.append(InputError(str(p), e.cause))
        except Exception as e:  # noqa: BLE001 - a reader bug must not stop the batch
            errors.append(InputError(str(p), f"{type(e).__name__}: {e}"))
    return ok, errors


def masks_from_dir(mask_dir: Path, image_id: str, shape: tuple[int, int]) -> dict[str, np.ndarray] | None:
    """``<mask_dir>/<image_id>_<structure>.png`` (0/1 or 0/255) -> bool masks, or None if absent.

    A mask file may declare no more pixels than the image has (``shape``).

    Raises:
        ReadError: a mask exists but cannot be read or has the wrong shape.
    """
    from anatomix.io.read import MIN_SIDE, read_mask

    out: dict[str, np.ndarray] = {}
    for s in STRUCTURE_KEYS:
        p = Path(mask_dir) / f"{image_id}_{s}.png"
        if not p.is_file():
            continue
        a = read_mask(p, max(shape[0] * shape[1], MIN_SIDE * MIN_SIDE))
        if a.shape != tuple(shape):
            raise ReadError(p, f"mask is {a.shape[1]}x{a.shape[0]}, image is {shape[1]}x{shape[0]}")
        out[s] = a
    return out or None


def segment_masks(radiographs: Sequence, segmenter=None) -> list[dict[str, np.ndarray]]:
    """Masks (``lungR``, ``lungL``, ``heart``; original frame) from ``segmenter`` (default: the
    default segmenter, loaded for this call).

    Raises:
        AnatomixError: the default segmenter (``refined``) is not bundled (the message names
            the missing weights).
    """
    from anatomix.models import load_segmenter

    seg = segmenter if segmenter is not None else load_segmenter()
    return [{k: v for k, v in s.masks.items() if k in STRUCTURE_KEYS} for s in seg.predict(list(radiographs))]


_POS = {"1", "abnormal", "anomalous", "anomaly", "true", "yes", "pneumonia", "positive"}
_NEG = {"0", "normal", "false", "no", "negative"}


def read_labels(path: Path) -> dict[str, int]:
    """Labels from a manifest or a CSV: image id -> 1 (abnormal) / 0 (normal).

    The id column is the first of ``image_id``, ``id``, ``path`` (file stem) found; the label
    column the first of ``label``, ``abnormal``, ``anomalous``, ``y``, ``target``. Values:
    ``normal``/``abnormal``, ``0``/``1``, ``true``/``false`` and a few synonyms.

    Raises:
        ReadError: unreadable file, no such columns, or no usable label.
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReadError(path, f"cannot read labels ({e})") from None
    if not rows:
        raise ReadError(path, "no rows")
    cols = rows[0].keys()
    idc = next((c for c in ("image_id", "id", "path") if c in cols), None)
    lc = next((c for c in ("label", "abnormal", "anomalous", "y", "target") if c in cols), None)
    if idc is None or lc is None:
        raise ReadError(path, f"needs an id column (image_id/id/path) and a label column "
                              f"(label/abnormal/anomalous/y/target); has {list(cols)}")
    out: dict[str, int] = {}
    for r in rows:
        key = r[idc] if idc != "path" else Path(r[idc]).stem
        v = str(r[lc]).strip().lower()
        if v in _POS:
            out[key] = 1
        elif v in _NEG:
            out[key] = 0
    if not out:
        raise ReadError(path, f"no usable labels in column {lc!r}")
    return out


def fit_order(inputs: Sequence) -> list[Path]:
    """The readable-path order in which :func:`fit` (``anatomix anomaly fit``) takes ``inputs``: expanded,
    unique and sorted (:func:`anatomix.io.inputs.expand_inputs`), NOT the order listed. The films a fit
    held out for calibration are ``[fit_order(inputs)[i] for i in split_calibration(n)[1]]`` (every
    input readable; a detector fitted here also lists them in ``meta["held_out"]``); tools that calibrate an
    ensemble on the same held-out normals must use this order."""
    return _expand(inputs)[0]


def _expand(inputs) -> tuple[list[Path], list[str], list[InputError]]:
    from anatomix.io.inputs import assign_image_ids, expand_inputs

    paths, errors = expand_inputs(inputs)
    return paths, assign_image_ids(paths), list(errors)


def _masks_for(items, mask_dir: Path | None, segment: bool, errors: list[InputError], segmenter=None):
    """Per (image_id, Radiograph): original-frame masks or None; unreadable mask files -> ``errors``.
    ``segment``: masks from ``segmenter`` (default: the default segmenter)."""
    if mask_dir is None and not segment:
        return [None] * len(items)
    if segment:
        return segment_masks([r for _, r in items], segmenter)
    out = []
    for i, r in items:
        try:
            out.append(masks_from_dir(mask_dir, i, r.shape))
        except ReadError as e:
            errors.append(InputError(e.path, e.cause))
            out.append(None)
    return out


def _write_errors(errors: Sequence[InputError], path: Path) -> Path | None:
    if not errors:
        return None
    from anatomix.io.inputs import write_errors

    write_errors(path, errors)
    return path


@dataclass
class Normals:
    """Normal images read into a detector's model frame.

    Attributes:
        paths: the files read, in :func:`fit_order`.
        images: ``(N, S, S)`` float32 in [0, 1].
        masks: per image, model-frame structure masks (``lungR``, ``lungL``, ``heart``) or None.
        errors: inputs that could not be read (or whose masks could not be).
    """

    paths: list[str]
    images: np.ndarray
    masks: list
    errors: list[InputError]

    def calibration_masks(self) -> list | None:
        """``masks`` when any image has some, else None (whole image only)."""
        return self.masks if any(m is not None for m in self.masks) else None


def read_normals(inputs: Sequence, image_size: int, mask_dir: Path | None = None, segment: bool = False,
                 minimum: int = 6, max_pixels: int = MAX_PIXELS, log: Log | None = None) -> Normals:
    """Read NORMAL images (and their masks) into the model frame of ``image_size``.

    Args:
        inputs: files, folders, globs or ``.txt``/``.csv`` lists.
        mask_dir: folder of ``<image_id>_<structure>.png`` masks (as ``anatomix segment`` writes).
        segment: masks from the default segmenter instead.
        minimum: fewest readable images accepted.
        log: called with one line (how many were read and how many failed).

    Raises:
        UsageError: fewer than ``minimum`` readable images.
        AnatomixError: the segmenter cannot be loaded (``segment``).
    """
    from anatomix.anomaly.detector import preprocess
    from anatomix.anomaly.scoring import masks_to_model

    paths, ids, errors = _expand(inputs)
    items, read_errors = read_images(paths, ids, max_pixels)
    errors += read_errors
    if log:
        log(f"{len(items)} normal images read, {len(errors)} failed")
    if len(items) < minimum:
        raise UsageError(f"need at least {minimum} readable normal images, got {len(items)}")
    masks = _masks_for(items, mask_dir, segment, errors)
    imgs, mm = [], []
    for (_, r), m in zip(items, masks):
        x, frame = preprocess(r.pixels, image_size)
        imgs.append(x)
        mm.append(masks_to_model(m, frame))
    return Normals([str(r.path) for _, r in items], np.stack(imgs).astype(np.float32), mm, errors)


def _load(detector, trust: bool):
    """A detector (:class:`~anatomix.anomaly.detector.Detector` or
    :class:`~anatomix.anomaly.ensemble.EnsembleDetector`) as is, or loaded by bundled name or path."""
    if not isinstance(detector, (str, os.PathLike)):
        return detector
    from anatomix.models import load_detector

    return load_detector(str(detector), trust=trust)


# -- fit ------------------------------------------------------------------------------------------
@dataclass
class FitReport:
    """What :func:`fit` or :func:`calibrate` did.

    Attributes:
        detector: the fitted (or recalibrated) detector, as saved.
        output: the detector file written.
        n_normals: readable normal images used (fit + calibration, or calibration).
        errors: inputs that failed; ``errors_path`` is where they are listed (None: none failed).
    """

    detector: Any
    output: Path
    n_normals: int
    errors: list[InputError] = field(default_factory=list)
    errors_path: Path | None = None


def fit(inputs: Sequence, output: Path, method: str = "ae", epochs: int | None = None, image_size: int | None = None,
        batch_size: int = 32, lr: float | None = None, calib_fraction: float = 0.1, target_fpr: float = 0.05,
        residual: str | None = None, critic_epochs: int | None = None, reduce: str | None = None, topk: float = 5.0,
        smooth: float | None = None, mask_dir: Path | None = None, segment: bool = False,
        model_config: Mapping[str, Any] | None = None, seed: int = 0, checkpoint: Path | None = None,
        max_pixels: int = MAX_PIXELS, errors_path: Path | None = None, command: str | None = None,
        progress: bool = True, log: Log | None = None, select: bool | None = None) -> FitReport:
    """Fit a detector on NORMAL images only and save it (``anatomix anomaly fit``).

    A random ``calib_fraction`` of the normals is held out: the detector's score normalisation
    and thresholds come from those normals only and are saved in the detector file (their paths in
    ``meta["held_out"]``). Training is
    resumable through ``checkpoint`` (default ``<output>.ckpt``; the critic's beside it as
    ``.critic.ckpt``, an ``rd`` teacher's as ``.teacher.ckpt``), all removed once the detector is written.

    Args:
        inputs: normal radiographs (files, folders, globs or lists); at least 6 readable.
        output: the detector file to write (``.pt``).
        method: ``ae`` | ``memae`` | ``mae`` | ``squid`` | ``simsid`` | ``rd`` (:data:`anatomix.anomaly.models.METHODS`), or
            ``zones`` (:mod:`anatomix.anomaly.zones`: lung-zone statistics, no training; needs masks).
        image_size: model frame side (default: the method's, 64; ``rd`` 128).
        epochs, lr, residual, reduce, smooth, select: None = the method's
            (:func:`anatomix.anomaly.models.fit_defaults`).
        residual, reduce, topk, smooth, target_fpr: the :class:`~anatomix.anomaly.detector.ScoringConfig`.
        select: keep the epoch chosen on held-out normals (:class:`anatomix.anomaly.selection.NormalSelection`).
        critic_epochs: epochs of the realness critic (default: 30 when ``residual`` uses it, else 0).
        mask_dir, segment: masks of the normals, so that the masked regions are calibrated too.
        model_config: extra model constructor arguments.
        errors_path: where failed inputs are listed (default: ``errors.csv`` next to ``output``).
        command: the command line, recorded in the detector's ``meta``.
        log: called with progress lines.
    """
    from anatomix.anomaly.detector import ScoringConfig
    from anatomix.anomaly.models import DEFAULT_IMAGE_SIZE, fit_defaults
    from anatomix.anomaly.train import fit_detector

    output = Path(output)
    if method == "zones":
        return _fit_zones(inputs, output, calib_fraction, target_fpr, mask_dir, segment, seed, max_pixels,
                          errors_path, command, log)
    d = fit_defaults(method)  # an unknown method fails before anything is read
    epochs, lr, residual, reduce, smooth, select = (d[k] if v is None else v for k, v in (
        ("epochs", epochs), ("lr", lr), ("residual", residual), ("reduce", reduce), ("smooth", smooth),
        ("select", select)))
    if critic_epochs is None:
        critic_epochs = 30 if "critic" in residual else 0
    size = image_size or DEFAULT_IMAGE_SIZE[method]
    normals = read_normals(inputs, size, mask_dir, segment, minimum=6, max_pixels=max_pixels, log=log)
    checkpoint = Path(checkpoint) if checkpoint else output.with_name(output.name + ".ckpt")
    meta: dict[str, Any] = {"inputs": [str(p) for p in inputs]}
    if command is not None:
        meta["command"] = command
    det = fit_detector(normals.images, method, size, epochs=epochs, batch_size=batch_size, lr=lr,
                       calib_fraction=calib_fraction, calib_masks=normals.calibration_masks(),
                       scoring=ScoringConfig(residual=residual, reduce=reduce, topk=topk, smooth_sigma=smooth,
                                             target_fpr=target_fpr),
                       seed=seed, checkpoint=checkpoint, model_config=dict(model_config or {}),
                       critic_epochs=critic_epochs, meta=meta, progress=progress, select=select)
    det.meta["held_out"] = [normals.paths[i] for i in det.meta["calibration_indices"]]
    det.save(output)
    checkpoint.unlink(missing_ok=True)
    checkpoint.with_suffix(".critic.ckpt").unlink(missing_ok=True)
    checkpoint.with_suffix(".teacher.ckpt").unlink(missing_ok=True)
    written = _write_errors(normals.errors, Path(errors_path) if errors_path else output.parent / ERRORS_NAME)
    return FitReport(det, output, len(normals.images), normals.errors, written)


def _fit_zones(inputs, output: Path, calib_fraction: float, target_fpr: float, mask_dir, segment: bool, seed: int,
               max_pixels: int, errors_path, command, log) -> FitReport:
    """:func:`fit` for ``method="zones"`` (:class:`~anatomix.anomaly.zones.ZoneDetector`: no training,
    a Gaussian on the lung-zone statistics of the normals; masks are required)."""
    from anatomix.anomaly.zones import IMAGE_SIZE, ZoneDetector

    if mask_dir is None and not segment:
        raise UsageError("--method zones scores inside the lungs: give --segment or --masks DIR")
    normals = read_normals(inputs, IMAGE_SIZE, mask_dir, segment, minimum=6, max_pixels=max_pixels, log=log)
    meta: dict[str, Any] = {"inputs": [str(p) for p in inputs]}
    if command is not None:
        meta["command"] = command
    kept = [i for i, m in enumerate(normals.masks) if m is not None]
    det = ZoneDetector.fit(normals.images[kept], [normals.masks[i] for i in kept], calib_fraction, seed, target_fpr,
                           meta=meta)
    det.meta["held_out"] = [normals.paths[kept[i]] for i in det.meta["calibration_indices"]]
    det.save(output)
    written = _write_errors(normals.errors, Path(errors_path) if errors_path else output.parent / ERRORS_NAME)
    return FitReport(det, output, len(normals.images), normals.errors, written)


def calibrate(inputs: Sequence, output: Path, detector: Any = DEFAULT_DETECTOR, target_fpr: float | None = None,
              mask_dir: Path | None = None, segment: bool = False, max_pixels: int = MAX_PIXELS,
              trust: bool = False, errors_path: Path | None = None, command: str | None = None,
              log: Log | None = None) -> FitReport:
    """Recalibrate a detector on local NORMAL images and save it (``anatomix anomaly calibrate``).

    Every image given is used as a held-out normal: the per-region normalisation and thresholds
    are refitted on them; the model and what defines the score stay as they are, so the ranking
    of images (AUROC) does not change, only where the flag falls.

    Args:
        inputs: normal radiographs of the site; at least 5 readable.
        output: the recalibrated detector file to write.
        detector: a :class:`~anatomix.anomaly.detector.Detector`, a detector file or a bundled name.
        target_fpr: false-positive rate to aim at (default: the detector's).
        trust: read a detector file that needs a full unpickle (runs code from the file).
    """
    output = Path(output)
    det = _load(detector, trust)
    segment = segment or (mask_dir is None and det.needs_masks)
    normals = read_normals(inputs, det.image_size, mask_dir, segment, minimum=5, max_pixels=max_pixels, log=log)
    det.calibrate(normals.images, normals.calibration_masks(), target_fpr)
    det.meta["recalibrated_on"] = {"n": len(normals.images), "inputs": [str(p) for p in inputs]}
    if command is not None:
        det.meta["recalibrated_on"]["command"] = command
    det.save(output)
    written = _write_errors(normals.errors, Path(errors_path) if errors_path else output.parent / ERRORS_NAME)
    return FitReport(det, output, len(normals.images), normals.errors, written)


# -- score ----------------------------------------------------------------------------------------
def score_columns() -> list[str]:
    """Header of ``scores.csv``: ids, the score and its verdict, then every region's normalised
    (``score_<region>``) and raw (``raw_<region>``) score; a region not available is empty."""
    from anatomix.anomaly.scoring import REGIONS

    return (["image_id", "path", "score", "anomalous", "threshold", "score_region", "mask_source"]
            + [f"score_{r}" for r in REGIONS] + [f"raw_{r}" for r in REGIONS])


def score_row(res) -> list[str]:
    """One :class:`~anatomix.anomaly.detector.AnomalyResult` as a ``scores.csv`` row (6 significant digits)."""
    from anatomix.anomaly.scoring import REGIONS

    def f(v):
        return "" if v is None else f"{v:.6g}"

    return ([res.image_id, res.path or "", f"{res.score:.6g}", str(int(res.anomalous)), f"{res.threshold:.6g}",
             res.score_region, res.mask_source] + [f(res.regions.get(r)) for r in REGIONS]
            + [f(res.raw.get(r)) for r in REGIONS])


def site_mismatch_note(n_scored: int, n_flagged: int, target_fpr: float) -> str | None:
    """A warning when far more images are flagged than the threshold's FPR suggests (a site the
    detector was not calibrated for), else None: at least 20 images, over 25 % and over 5x the
    target FPR flagged."""
    if n_scored >= 20 and n_flagged > max(0.25, 5 * target_fpr) * n_scored:
        return (f"{100 * n_flagged / n_scored:.0f}% flagged at a {100 * target_fpr:.0f}% FPR "
                f"threshold; if most of these images are normal, the threshold does not fit this site: "
                f"recalibrate on local normals with `anatomix anomaly calibrate`")
    return None


def write_map(path: Path, pixels: np.ndarray, heat: np.ndarray, masks, vmax: float | None = None) -> None:
    """Write the heat-map overlay PNG of one image (original size) atomically."""
    from PIL import Image

    from anatomix.anomaly.scoring import overlay
    from anatomix.io.atomic import atomic_write

    rgb = overlay(pixels, heat, masks, vmax=vmax)
    with atomic_write(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def _write_scores(path: Path, rows: Sequence[Sequence[str]]) -> None:
    """``scores.csv`` written atomically and fsynced (csv module's default ``\\r\\n`` line ends)."""
    from anatomix.io.atomic import atomic_write

    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(score_columns())
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class ScoreReport:
    """What :func:`score` did.

    Attributes:
        results: one :class:`~anatomix.anomaly.detector.AnomalyResult` per scored image, in
            ``scores.csv`` order (heat maps not kept).
        detector: the detector used.
        output: the ``scores.csv`` written.
        errors, errors_path: failed inputs and where they are listed (None: none failed).
        note: the site-mismatch warning of :func:`site_mismatch_note`, or None.
    """

    results: list
    detector: Any
    output: Path
    errors: list[InputError] = field(default_factory=list)
    errors_path: Path | None = None
    note: str | None = None

    @property
    def n_flagged(self) -> int:
        return sum(int(r.anomalous) for r in self.results)


@dataclass
class ScoreTask:
    """Scoring of chunks of ``(path, image_id)``: the :class:`~anatomix.batch.engines.ChunkTask`
    that every engine runs (read, mask, score, write each image's heat map).

    A chunk's result is ``(rows, results, errors)``: its ``scores.csv`` rows, its
    :class:`~anatomix.anomaly.detector.AnomalyResult` records (maps dropped) and its failed inputs.
    """

    detector: Any
    mask_dir: Path | None = None
    segment: bool = False
    maps_dir: Path | None = None
    max_pixels: int = MAX_PIXELS

    def open(self) -> Callable[[list], tuple]:
        segmenter = None
        if self.segment:
            from anatomix.models import load_segmenter

            segmenter = load_segmenter()
        return lambda chunk: self.score(chunk, segmenter)

    def score(self, chunk: list[tuple[Path, str]], segmenter=None) -> tuple[list, list, list[InputError]]:
        items, errors = read_images([p for p, _ in chunk], [i for _, i in chunk], self.max_pixels)
        if not items:
            return [], [], errors
        masks = _masks_for(items, self.mask_dir, self.segment, errors, segmenter)
        det = self.detector
        results = det.score([r for _, r in items], masks, keep_maps=self.maps_dir is not None)
        rows = []
        for (iid, r), m, res in zip(items, masks, results):
            res.image_id = iid
            rows.append(score_row(res))
            if self.maps_dir is not None:
                write_map(Path(self.maps_dir) / f"{iid}_anomaly.png", r.pixels, res.heatmap, m,
                          det.meta.get("map_vmax"))
            res.heatmap = res.model_map = None
        return rows, results, errors


def score(inputs: Sequence, output: Path, detector: Any = DEFAULT_DETECTOR, maps_dir: Path | None = None,
          mask_dir: Path | None = None, segment: bool = False, batch_size: int = 32,
          max_pixels: int = MAX_PIXELS, trust: bool = False, errors_path: Path | None = None,
          progress: bool | None = None, engine=None) -> ScoreReport:
    """Score radiographs into ``scores.csv`` (``anatomix anomaly score``).

    ``score`` is normalised on held-out normals (0 = their mean, 1 = one standard deviation
    above); ``anomalous`` is 1 above the detector's calibrated threshold. With masks the score is
    the detector's primary region's (``score_region`` says which region was used); without, the
    whole image's. Columns: :func:`score_columns`.

    Args:
        inputs: radiographs (files, folders, globs or lists).
        output: the ``scores.csv`` to write (atomically).
        detector: a :class:`~anatomix.anomaly.detector.Detector`, a detector file or a bundled name.
        maps_dir: folder for heat-map overlays ``<image_id>_anomaly.png`` (original size).
        mask_dir: folder of ``<image_id>_<structure>.png`` masks; ``segment``: masks from the
            default segmenter instead; neither: whole image only, or the default segmenter's masks
            for a detector that cannot score without them (``needs_masks``: a zones member).
        batch_size: images read and scored at a time (the same batches on every engine).
        errors_path: where failed inputs are listed (default: ``errors.csv`` next to ``output``).
        progress: a progress bar on stderr (images/s, ETA); None: when stderr is a terminal.
        engine: where the scoring runs (:mod:`anatomix.batch.engines`); default this process.
            Every engine gives the same ``scores.csv``, ``errors.csv`` and maps. ``maps_dir``
            must be reachable from every worker.
    """
    from anatomix.batch.engines import LocalEngine, chunked, progress_bar

    output = Path(output)
    det = _load(detector, trust)
    segment = segment or (mask_dir is None and det.needs_masks)
    paths, ids, errors = _expand(inputs)
    task = ScoreTask(det, mask_dir, segment, maps_dir, max_pixels)
    chunks = list(chunked(zip(paths, ids), batch_size))
    rows: list[list[str]] = []
    kept = []
    scored = (engine or LocalEngine()).map_chunks(task, chunks)
    for chunk, (chunk_rows, results, chunk_errors) in zip(chunks, progress_bar(scored, "score", len(chunks), progress, "batch")):
        rows += chunk_rows
        kept += results
        errors += chunk_errors
    _write_scores(output, rows)
    report = ScoreReport(kept, det, output, errors)
    report.note = site_mismatch_note(len(rows), report.n_flagged, det.scoring.target_fpr)
    report.errors_path = _write_errors(errors, Path(errors_path) if errors_path else output.parent / ERRORS_NAME)
    return report


# -- evaluate -------------------------------------------------------------------------------------
@dataclass
class EvaluationReport:
    """What :func:`evaluate` found and wrote.

    Attributes:
        metrics: per evaluated score column, :func:`anatomix.anomaly.metrics.summary`; also
            ``threshold`` (``fpr``, ``tpr`` of the ``anomalous`` flags) and ``unlabelled`` (count).
        text: the markdown table (``metrics.md``).
        out_dir: where ``metrics.json``, ``metrics.md`` and ``roc.png`` were written.
    """

    metrics: dict[str, Any]
    text: str
    out_dir: Path

    @property
    def json_path(self) -> Path:
        return self.out_dir / "metrics.json"

    @property
    def roc_path(self) -> Path:
        return self.out_dir / "roc.png"


def evaluate(scores: Path, labels: Path, out_dir: Path | None = None) -> EvaluationReport:
    """AUROC, AP, TPR at 5 % and 10 % FPR and a ROC plot of a ``scores.csv`` against labels
    (``anatomix anomaly evaluate``).

    Every score column present (``score`` and each calibrated ``score_<region>`` that every
    labelled image has) is evaluated; images without a label are left out and counted.

    Args:
        scores: a ``scores.csv`` written by :func:`score`.
        labels: a manifest or CSV with an id and a label column (:func:`read_labels`).
        out_dir: folder for ``metrics.json``, ``metrics.md`` and ``roc.png`` (default: next to ``scores``).

    Raises:
        ReadError: unreadable labels, or ``scores`` is not a scores.csv.
        UsageError: the labelled images are not both normal and abnormal.
    """
    from anatomix.anomaly import metrics
    from anatomix.io.atomic import atomic_write

    scores = Path(scores)
    lab = read_labels(labels)
    with open(scores, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "score" not in rows[0]:
        raise ReadError(scores, "not a scores.csv (no 'score' column)")
    keyed = [(r, lab.get(r["image_id"], lab.get(Path(r.get("path", "")).stem))) for r in rows]
    used = [(r, y) for r, y in keyed if y is not None]
    if len({y for _, y in used}) < 2:
        raise UsageError("need labelled normal and abnormal images among the scores")
    cols = ["score"] + [c for c in rows[0] if c.startswith("score_") and c != "score_region"
                        and all(r[c] != "" for r, _ in used)]
    y = np.array([yy for _, yy in used])
    out_dir = Path(out_dir) if out_dir is not None else scores.parent
    res: dict[str, Any] = {}
    curves = {}
    for c in cols:
        s = np.array([float(r[c]) for r, _ in used])
        res[c] = metrics.summary(y, s)
        curves[c] = (y, s)
    flagged = np.array([int(r["anomalous"]) for r, _ in used])
    res["threshold"] = {"fpr": float(flagged[y == 0].mean()), "tpr": float(flagged[y == 1].mean())}
    res["unlabelled"] = len(rows) - len(used)
    lines = ["| scores | AUROC | AP | TPR@5%FPR | TPR@10%FPR | normal | abnormal |", "|---|---|---|---|---|---|---|"]
    for c in cols:
        m = res[c]
        lines.append(f"| {c} | {m['auroc']:.3f} | {m['ap']:.3f} | {m['tpr@5%fpr']:.3f} | {m['tpr@10%fpr']:.3f} "
                     f"| {m['n_normal']} | {m['n_abnormal']} |")
    lines.append(f"\nAt the calibrated threshold: FPR {res['threshold']['fpr']:.3f}, TPR {res['threshold']['tpr']:.3f}"
                 f"; {res['unlabelled']} scored images had no label.")
    text = "\n".join(lines)
    with atomic_write(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(res, indent=2))
    with atomic_write(out_dir / "metrics.md") as tmp:
        tmp.write_text(text + "\n")
    metrics.plot_roc(curves, out_dir / "roc.png", title=f"ROC: {scores.name}")
    return EvaluationReport(res, text, out_dir)

