"""``anatomix anomaly``: fit a normal-only detector, score images, evaluate against labels.

    anatomix anomaly fit NORMALS... -o detector.pt [--method ae|memae|mae|squid] [--epochs N]
    anatomix anomaly score IMAGES... [--detector detector.pt] -o scores.csv [--maps DIR]
    anatomix anomaly evaluate scores.csv --labels manifest.csv [-o DIR]

Bad inputs never stop a run: they go to ``errors.csv`` (path, reason) and the exit status is 1.
Exit status 2 is a usage error (bad option, unreadable detector or labels).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import click

from anatomix.cli import options

METHODS = ("ae", "memae", "mae", "squid")


def _setup(threads: int | None) -> None:
    from anatomix.runtime import quiet_imports

    quiet_imports()
    if threads:
        import torch

        torch.set_num_threads(threads)


def _exit_on_errors(errors: list, path: Path) -> None:
    """List failed inputs in ``path`` (path, reason) and exit with status 1, when there are any."""
    if errors:
        from anatomix.io.inputs import write_errors

        write_errors(path, errors)
        click.echo(f"{len(errors)} inputs failed (see {path})", err=True)
        sys.exit(1)


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def _expand(inputs):
    from anatomix.io.inputs import assign_image_ids, expand_inputs

    paths, errors = expand_inputs(inputs)
    return paths, assign_image_ids(paths), list(errors)


def _masks_for(items, mask_dir: Path | None, segment: bool, errors: list):
    """Per (image_id, Radiograph): original-frame masks or None; failures -> errors (masks None)."""
    from anatomix.anomaly.inputs import masks_from_dir, segment_masks
    from anatomix.errors import ReadError
    from anatomix.io.inputs import InputError

    if mask_dir is None and not segment:
        return [None] * len(items)
    if segment:
        return segment_masks([r for _, r in items])
    out = []
    for i, r in items:
        try:
            out.append(masks_from_dir(mask_dir, i, r.shape))
        except ReadError as e:
            errors.append(InputError(e.path, e.cause))
            out.append(None)
    return out


@click.group()
def anomaly() -> None:
    """Normal-only anomaly screening: fit on normals, score new images, evaluate."""


def _load_detector(name_or_path: str, trust: bool = False):
    """The detector file or bundled registry name -> Detector; a bad one exits with status 2."""
    from anatomix.anomaly.detector import Detector
    from anatomix.errors import AnatomixError
    from anatomix.models import resolve

    try:
        return Detector.load(resolve(name_or_path), trust=trust)
    except AnatomixError as e:
        _fail(str(e))


def _normals(inputs, size: int, mask_dir, segment: bool, minimum: int, max_pixels: int):
    """Read NORMAL images into the model frame: ``(N, S, S)`` float32, per-image model-frame
    masks (or None each) and the list of input errors; exits (status 2) below ``minimum``."""
    import numpy as np

    from anatomix.anomaly.detector import preprocess
    from anatomix.anomaly.inputs import read_images
    from anatomix.anomaly.scoring import masks_to_model
    from anatomix.errors import AnatomixError

    paths, ids, errors = _expand(inputs)
    items, read_errors = read_images(paths, ids, max_pixels)
    errors += read_errors
    click.echo(f"{len(items)} normal images read, {len(errors)} failed", err=True)
    if len(items) < minimum:
        _fail(f"need at least {minimum} readable normal images, got {len(items)}")
    try:
        masks = _masks_for(items, mask_dir, segment, errors)
    except AnatomixError as e:
        _fail(str(e))
    imgs, mm = [], []
    for (_, r), m in zip(items, masks):
        x, frame = preprocess(r.pixels, size)
        imgs.append(x)
        mm.append(masks_to_model(m, frame))
    return np.stack(imgs).astype(np.float32), mm, errors


@anomaly.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Detector file to write (.pt).")
@click.option("--method", type=click.Choice(METHODS), default="ae", show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=40, show_default=True)
@click.option("--image-size", type=click.IntRange(16), default=None,
              help="Model frame side (default: 64 for every method).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--calib-fraction", type=click.FloatRange(0.01, 0.9), default=0.1, show_default=True,
              help="Share of the normals held out for normalisation and threshold.")
@click.option("--target-fpr", type=click.FloatRange(0.001, 0.5), default=0.05, show_default=True,
              help="False-positive rate the threshold aims at on new normals.")
@click.option("--residual", type=click.Choice(("auto", "l2", "l1", "ssim", "l2+ssim", "feature", "critic", "ssim+critic",
                                               "l2+critic")), default="ssim+critic",
              show_default=True, help="Residual map (auto = the method's own map; feature = encoder-feature "
                                      "distance, not for mae; critic = the realness critic's map; X+critic = "
                                      "both, each normalised on held-out normals).")
@click.option("--critic-epochs", type=click.IntRange(0), default=None,
              help="Epochs of the realness critic fitted after the model (default: 30 when --residual uses "
                   "the critic, else 0 = none).")
@click.option("--reduce", type=click.Choice(("mean", "max", "topk")), default="mean", show_default=True,
              help="Aggregation inside a region (topk = mean of the highest --topk percent).")
@click.option("--topk", type=click.FloatRange(0.01, 100), default=5.0, show_default=True,
              help="Percent of highest values averaged by --reduce topk.")
@click.option("--smooth", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Gaussian smoothing of the map (model pixels).")
@click.option("--masks", "mask_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Folder of <image_id>_<structure>.png masks to calibrate the masked regions too.")
@click.option("--segment", is_flag=True, help="Calibrate masked regions with the default segmenter (refined).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Resumable training checkpoint (default: OUTPUT.ckpt; rerun to resume).")
@click.option("--model-config", default="{}", show_default=True,
              help='Model arguments as JSON, e.g. \'{"latent": 8}\' (see anatomix.anomaly.models).')
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")
@click.option("--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to list unreadable inputs (default: errors.csv next to OUTPUT).")
@options.max_pixels
def fit(inputs, output, method, epochs, image_size, batch_size, lr, calib_fraction, target_fpr, residual,
        critic_epochs, reduce, topk, smooth, mask_dir, segment, model_config, seed, checkpoint, threads, errors_path,
        max_pixels) -> None:
    """Fit a detector on NORMAL images only (files, folders, globs or .txt/.csv lists).

    A random --calib-fraction of them is held out: the detector's score normalisation and
    threshold come from those normals only and are saved in the detector file.
    """
    _setup(threads)
    import json

    from anatomix.anomaly.detector import ScoringConfig
    from anatomix.anomaly.models import DEFAULT_IMAGE_SIZE
    from anatomix.anomaly.train import fit_detector
    from anatomix.errors import AnatomixError

    try:
        model_config = json.loads(model_config)
        assert isinstance(model_config, dict)
    except (ValueError, AssertionError):
        _fail(f"--model-config must be a JSON object, got {model_config!r}")
    if critic_epochs is None:
        critic_epochs = 30 if "critic" in residual else 0
    t0 = time.time()
    size = image_size or DEFAULT_IMAGE_SIZE[method]
    imgs, mm, errors = _normals(inputs, size, mask_dir, segment, minimum=6, max_pixels=max_pixels)
    try:
        det = fit_detector(imgs, method, size, epochs=epochs, batch_size=batch_size,
                           lr=lr, calib_fraction=calib_fraction, calib_masks=mm if any(m is not None for m in mm) else None,
                           scoring=ScoringConfig(residual=residual, reduce=reduce, topk=topk, smooth_sigma=smooth,
                                                 target_fpr=target_fpr),
                           seed=seed, checkpoint=checkpoint or output.with_name(output.name + ".ckpt"),
                           model_config=model_config, critic_epochs=critic_epochs,
                           meta={"inputs": [str(p) for p in inputs], "command": " ".join(sys.argv)})
    except (ValueError, TypeError, AnatomixError) as e:
        _fail(str(e))
    det.save(output)
    ck = checkpoint or output.with_name(output.name + ".ckpt")
    ck.unlink(missing_ok=True)
    ck.with_suffix(".critic.ckpt").unlink(missing_ok=True)
    c = det.calibration["image"]
    click.echo(f"fitted {method} on {det.meta['n_fit']} normals, calibrated on {det.meta['n_calibration']} "
               f"(threshold {c['threshold']:.3f} for {100 * c['target_fpr']:.0f}% FPR; regions "
               f"{', '.join(sorted(det.calibration))}) in {time.time() - t0:.0f}s -> {output}")
    _exit_on_errors(errors, errors_path or output.parent / "errors.csv")


@anomaly.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--detector", default="anomaly", show_default=True,
              help="Detector file, or the bundled detector's registry name.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Recalibrated detector file to write (.pt).")
@click.option("--target-fpr", type=click.FloatRange(0.001, 0.5), default=None,
              help="False-positive rate to aim at (default: the detector's).")
@click.option("--masks", "mask_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Folder of <image_id>_<structure>.png masks to calibrate the masked regions too.")
@click.option("--segment", is_flag=True, help="Calibrate masked regions with the default segmenter (refined).")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")
@click.option("--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to list unreadable inputs (default: errors.csv next to OUTPUT).")
@options.max_pixels
@options.trust_checkpoint
def calibrate(inputs, detector, output, target_fpr, mask_dir, segment, threads, errors_path, max_pixels,
              trust_checkpoint) -> None:
    """Recalibrate a detector on local NORMAL images (another site, scanner or protocol).

    Every image given is used as a held-out normal: the per-region normalisation and
    thresholds are refitted on them; the model and what defines the score stay as they are, so
    the ranking of images (AUROC) does not change, only where the flag falls.
    """
    _setup(threads)
    t0 = time.time()
    det = _load_detector(detector, trust_checkpoint)
    imgs, mm, errors = _normals(inputs, det.image_size, mask_dir, segment, minimum=5, max_pixels=max_pixels)
    det.calibrate(imgs, mm if any(m is not None for m in mm) else None, target_fpr)
    det.meta["recalibrated_on"] = {"n": len(imgs), "inputs": [str(p) for p in inputs], "command": " ".join(sys.argv)}
    det.save(output)
    c = det.calibration[det.scoring.primary if det.scoring.primary in det.calibration else "image"]
    click.echo(f"recalibrated on {len(imgs)} normals (threshold {c['threshold']:.3f} for "
               f"{100 * det.scoring.target_fpr:.0f}% FPR; regions {', '.join(sorted(det.calibration))}) "
               f"in {time.time() - t0:.0f}s -> {output}")
    _exit_on_errors(errors, errors_path or output.parent / "errors.csv")


def score_columns() -> list[str]:
    from anatomix.anomaly.scoring import REGIONS

    return (["image_id", "path", "score", "anomalous", "threshold", "score_region", "mask_source"]
            + [f"score_{r}" for r in REGIONS] + [f"raw_{r}" for r in REGIONS])


def _row(res) -> list[str]:
    from anatomix.anomaly.scoring import REGIONS

    def f(v):
        return "" if v is None else f"{v:.6g}"

    return ([res.image_id, res.path or "", f"{res.score:.6g}", str(int(res.anomalous)), f"{res.threshold:.6g}",
             res.score_region, res.mask_source] + [f(res.regions.get(r)) for r in REGIONS] + [f(res.raw.get(r)) for r in REGIONS])


@anomaly.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--detector", default="anomaly", show_default=True,
              help="Detector file, or the bundled detector's registry name.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="scores.csv to write.")
@click.option("--maps", "maps_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for heat-map overlays (<image_id>_anomaly.png, original size).")
@click.option("--masks", "mask_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Folder of <image_id>_<structure>.png masks (as `anatomix segment` writes).")
@click.option("--segment", is_flag=True, help="Get masks from the default segmenter (refined).")
@click.option("--no-mask", is_flag=True, help="Whole-image scores only (ignore --masks/--segment).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")
@click.option("--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to list failed inputs (default: errors.csv next to OUTPUT).")
@options.max_pixels
@options.trust_checkpoint
def score(inputs, detector, output, maps_dir, mask_dir, segment, no_mask, batch_size, threads, errors_path,
          max_pixels, trust_checkpoint) -> None:
    """Score radiographs: scores.csv with image_id, path, score, anomalous and per-region scores.

    score is normalised on held-out normals (0 = their mean, 1 = one standard deviation
    above); anomalous is 1 above the detector's calibrated threshold. With masks the score
    is the lungs' (score_region says which region was used); without, the whole image's.
    """
    _setup(threads)
    from tqdm.auto import tqdm

    from anatomix.anomaly.inputs import read_images
    from anatomix.errors import AnatomixError
    from anatomix.io.atomic import atomic_write

    t0 = time.time()
    det = _load_detector(detector, trust_checkpoint)
    if no_mask:
        mask_dir, segment = None, False
    paths, ids, errors = _expand(inputs)
    rows: list[list[str]] = []
    n_flag = 0
    for start in tqdm(range(0, len(paths), batch_size), desc="score", unit="batch", leave=False,
                      disable=len(paths) <= batch_size):
        items, read_errors = read_images(paths[start:start + batch_size], ids[start:start + batch_size], max_pixels)
        errors += read_errors
        if not items:
            continue
        try:
            masks = _masks_for(items, mask_dir, segment, errors)
            results = det.score([r for _, r in items], masks, keep_maps=maps_dir is not None)
        except AnatomixError as e:
            _fail(str(e))
        for (iid, r), m, res in zip(items, masks, results):
            res.image_id = iid
            rows.append(_row(res))
            n_flag += res.anomalous
            if maps_dir is not None:
                _write_map(maps_dir / f"{iid}_anomaly.png", r.pixels, res.heatmap, m, det)
    with atomic_write(output) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(score_columns())
        w.writerows(rows)
    click.echo(f"{len(rows)} scored ({n_flag} flagged anomalous at {100 * det.scoring.target_fpr:.0f}% FPR), "
               f"{len(errors)} failed in {time.time() - t0:.1f}s -> {output}")
    if len(rows) >= 20 and n_flag > max(0.25, 5 * det.scoring.target_fpr) * len(rows):
        click.echo(f"note: {100 * n_flag / len(rows):.0f}% flagged at a {100 * det.scoring.target_fpr:.0f}% FPR "
                   f"threshold; if most of these images are normal, the threshold does not fit this site: "
                   f"recalibrate on local normals with `anatomix anomaly calibrate`", err=True)
    _exit_on_errors(errors, errors_path or output.parent / "errors.csv")


def _write_map(path: Path, pixels, heat, masks, det) -> None:
    from PIL import Image

    from anatomix.anomaly.scoring import overlay
    from anatomix.io.atomic import atomic_write

    rgb = overlay(pixels, heat, masks, vmax=det.meta.get("map_vmax"))
    with atomic_write(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


@anomaly.command()
@click.argument("scores", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--labels", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="Manifest or CSV with an id column (image_id/id/path) and a label column "
                   "(label: normal/abnormal or 0/1).")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for metrics.json, metrics.md and roc.png (default: next to SCORES).")
def evaluate(scores, labels, out_dir) -> None:
    """AUROC, AP, TPR at 5% and 10% FPR and a ROC plot of a scores.csv against labels.

    Every score column present (score and each calibrated score_<region>) is evaluated;
    images without a label are left out and counted.
    """
    _setup(None)
    import json

    import numpy as np

    from anatomix.anomaly import metrics
    from anatomix.anomaly.inputs import read_labels
    from anatomix.errors import ReadError
    from anatomix.io.atomic import atomic_write

    try:
        lab = read_labels(labels)
    except ReadError as e:
        _fail(str(e))
    with open(scores, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "score" not in rows[0]:
        _fail(f"{scores}: not a scores.csv (no 'score' column)")
    keyed = [(r, lab.get(r["image_id"], lab.get(Path(r.get("path", "")).stem))) for r in rows]
    used = [(r, y) for r, y in keyed if y is not None]
    if len({y for _, y in used}) < 2:
        _fail("need labelled normal and abnormal images among the scores")
    cols = ["score"] + [c for c in rows[0] if c.startswith("score_") and c != "score_region"
                        and all(r[c] != "" for r, _ in used)]
    y = np.array([yy for _, yy in used])
    out_dir = out_dir or scores.parent
    res = {}
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
    click.echo(text)
    click.echo(f"-> {out_dir / 'metrics.json'}, {out_dir / 'roc.png'}")
