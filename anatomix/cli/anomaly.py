"""``anatomix anomaly``: fit a normal-only detector, score images, evaluate against labels.

    anatomix anomaly fit NORMALS... -o detector.pt [--method ae|memae|mae|squid|simsid|rd|zones] [--epochs N]
    anatomix anomaly score IMAGES... [--detector detector.pt] -o scores.csv [--maps DIR]
    anatomix anomaly evaluate scores.csv --labels manifest.csv [-o DIR]

Bad inputs never stop a run: they go to ``errors.csv`` (path, reason) and the exit status is 1.
Exit status 2 is a usage error (bad option, unreadable detector or labels).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from anatomix.anomaly.models import METHODS
from anatomix.cli import options
from anatomix.models import DEFAULT_DETECTOR


def _setup(threads: int | None) -> None:
    from anatomix.runtime import quiet_imports

    quiet_imports()
    if threads:
        import torch

        torch.set_num_threads(threads)


def _exit_on_errors(report) -> None:
    """Exit with status 1 when inputs failed (the library listed them in ``errors.csv``)."""
    if report.errors:
        click.echo(f"{len(report.errors)} inputs failed (see {report.errors_path})", err=True)
        sys.exit(1)


def _stderr(line: str) -> None:
    click.echo(line, err=True)


def _options(*decorators):
    """Several click options as one decorator (applied in the order listed)."""
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


_calibration_masks = _options(
    click.option("--masks", "mask_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
                 help="Folder of <image_id>_<structure>.png masks to calibrate the masked regions too."),
    click.option("--segment", is_flag=True, help="Calibrate masked regions with the default segmenter (refined)."))
_detector = click.option("--detector", default=DEFAULT_DETECTOR, show_default=True,
                         help="Detector file, or a bundled detector's registry name: anomaly (pediatric), "
                              "anomaly-ensemble (pediatric, stronger, slower), anomaly-adult.")
_threads = click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")


def _detector_io(output_help: str):
    """INPUTS, --detector and -o/--output of the commands that apply a detector."""
    return _options(click.argument("inputs", nargs=-1, required=True), _detector,
                    click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
                                 help=output_help))


def _errors(what: str):
    return click.option("--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help=f"Where to list {what} (default: errors.csv next to OUTPUT).")


@click.group(cls=options.Group)
def anomaly() -> None:
    """Normal-only anomaly screening: fit on normals, score new images, evaluate."""


@anomaly.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Detector file to write (.pt).")
@click.option("--method", type=click.Choice(METHODS + ("zones",)), default="ae", show_default=True,
              help="Detector family; zones = lung-zone statistics (no training; needs --segment or --masks).")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Training epochs (default: 40; rd 30).")
@click.option("--image-size", type=click.IntRange(16), default=None,
              help="Model frame side (default: 64; rd 128).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: 1e-3; rd 2e-3).")
@click.option("--calib-fraction", type=click.FloatRange(0.01, 0.9), default=0.1, show_default=True,
              help="Share of the normals held out for normalisation and threshold.")
@click.option("--target-fpr", type=click.FloatRange(0.001, 0.5), default=0.05, show_default=True,
              help="False-positive rate the threshold aims at on new normals.")
@click.option("--residual", type=click.Choice(("auto", "l2", "l1", "ssim", "l2+ssim", "feature", "critic", "ssim+critic",
                                               "l2+critic")), default=None,
              help="Residual map (default: ssim+critic; rd auto. auto = the method's own map, for rd the "
                   "teacher-student feature discrepancy; feature = encoder-feature distance, not for mae or rd; "
                   "critic = the realness critic's map; X+critic = both, each normalised on held-out normals).")
@click.option("--critic-epochs", type=click.IntRange(0), default=None,
              help="Epochs of the realness critic fitted after the model (default: 30 when --residual uses "
                   "the critic, else 0 = none).")
@click.option("--reduce", type=click.Choice(("mean", "max", "topk")), default=None,
              help="Aggregation inside a region (default: mean; rd topk = mean of the highest --topk percent).")
@click.option("--topk", type=click.FloatRange(0.01, 100), default=5.0, show_default=True,
              help="Percent of highest values averaged by --reduce topk.")
@click.option("--smooth", type=click.FloatRange(0), default=None,
              help="Gaussian smoothing of the map, model pixels (default: 1; rd 2).")
@click.option("--select/--no-select", default=None,
              help="Keep the epoch that best separates held-out normals from synthetic opacities made from "
                   "them (normals only; default: on for rd, off otherwise).")
@_calibration_masks
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Resumable training checkpoint (default: OUTPUT.ckpt; rerun to resume).")
@click.option("--model-config", default="{}", show_default=True,
              help='Model arguments as JSON, e.g. \'{"latent": 8}\' (see anatomix.anomaly.models).')
@click.option("--seed", type=int, default=0, show_default=True)
@_threads
@_errors("unreadable inputs")
@options.max_pixels
def fit(inputs, output, method, epochs, image_size, batch_size, lr, calib_fraction, target_fpr, residual,
        critic_epochs, reduce, topk, smooth, select, mask_dir, segment, model_config, seed, checkpoint, threads,
        errors_path, max_pixels) -> None:
    """Fit a detector on NORMAL images only (files, folders, globs or .txt/.csv lists).

    A random --calib-fraction of them is held out: the detector's score normalisation and
    threshold come from those normals only and are saved in the detector file.
    """
    _setup(threads)
    import json

    from anatomix.anomaly import run

    try:
        config = json.loads(model_config)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise click.BadParameter(f"must be a JSON object, got {model_config!r}", param_hint="'--model-config'")
    t0 = time.time()
    report = run.fit(inputs, output, method=method, epochs=epochs, image_size=image_size, batch_size=batch_size,
                     lr=lr, calib_fraction=calib_fraction, target_fpr=target_fpr, residual=residual,
                     critic_epochs=critic_epochs, reduce=reduce, topk=topk, smooth=smooth, mask_dir=mask_dir,
                     segment=segment, model_config=config, seed=seed, checkpoint=checkpoint,
                     max_pixels=max_pixels, errors_path=errors_path, command=" ".join(sys.argv), log=_stderr,
                     select=select)
    det = report.detector
    c = det.calibration["image"]
    click.echo(f"fitted {method} on {det.meta['n_fit']} normals, calibrated on {det.meta['n_calibration']} "
               f"(threshold {c['threshold']:.3f} for {100 * c['target_fpr']:.0f}% FPR; regions "
               f"{', '.join(sorted(det.calibration))}) in {time.time() - t0:.0f}s -> {output}")
    _exit_on_errors(report)


@anomaly.command()
@_detector_io("Recalibrated detector file to write (.pt).")
@click.option("--target-fpr", type=click.FloatRange(0.001, 0.5), default=None,
              help="False-positive rate to aim at (default: the detector's).")
@_calibration_masks
@_threads
@_errors("unreadable inputs")
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
    from anatomix.anomaly import run

    t0 = time.time()
    report = run.calibrate(inputs, output, detector, target_fpr=target_fpr, mask_dir=mask_dir, segment=segment,
                           max_pixels=max_pixels, trust=trust_checkpoint, errors_path=errors_path,
                           command=" ".join(sys.argv), log=_stderr)
    det = report.detector
    c = det.calibration[det.scoring.primary if det.scoring.primary in det.calibration else "image"]
    click.echo(f"recalibrated on {report.n_normals} normals (threshold {c['threshold']:.3f} for "
               f"{100 * det.scoring.target_fpr:.0f}% FPR; regions {', '.join(sorted(det.calibration))}) "
               f"in {time.time() - t0:.0f}s -> {output}")
    _exit_on_errors(report)


@anomaly.command()
@_detector_io("scores.csv to write.")
@click.option("--maps", "maps_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for heat-map overlays (<image_id>_anomaly.png, original size).")
@click.option("--masks", "mask_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Folder of <image_id>_<structure>.png masks (as `anatomix segment` writes).")
@click.option("--segment", is_flag=True, help="Get masks from the default segmenter (refined).")
@click.option("--no-mask", is_flag=True, help="Whole-image scores only (ignore --masks/--segment).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@_threads
@_errors("failed inputs")
@options.engine
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@options.max_pixels
@options.trust_checkpoint
def score(inputs, detector, output, maps_dir, mask_dir, segment, no_mask, batch_size, threads, errors_path,
          engine, address, num_workers, cpus_per_worker, gpus_per_worker, progress, max_pixels,
          trust_checkpoint) -> None:
    """Score radiographs: scores.csv with image_id, path, score, anomalous and per-region scores.

    score is normalised on held-out normals (0 = their mean, 1 = one standard deviation
    above); anomalous is 1 above the detector's calibrated threshold. With masks the score
    is the lungs' (score_region says which region was used); without, the whole image's.
    """
    _setup(threads)
    from anatomix.anomaly import run

    t0 = time.time()
    if no_mask:
        mask_dir, segment = None, False
    chosen = options.make_engine(engine, 0, address, num_workers, cpus_per_worker, gpus_per_worker)
    report = run.score(inputs, output, detector, maps_dir=maps_dir, mask_dir=mask_dir, segment=segment,
                       batch_size=batch_size, max_pixels=max_pixels, trust=trust_checkpoint,
                       errors_path=errors_path, progress=progress, engine=chosen)
    fpr = report.detector.scoring.target_fpr
    click.echo(f"{len(report.results)} scored ({report.n_flagged} flagged anomalous at {100 * fpr:.0f}% FPR), "
               f"{len(report.errors)} failed in {time.time() - t0:.1f}s -> {output}")
    if report.note:
        click.echo(f"note: {report.note}", err=True)
    _exit_on_errors(report)


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
    from anatomix.anomaly import run

    report = run.evaluate(scores, labels, out_dir)
    click.echo(report.text)
    click.echo(f"-> {report.json_path}, {report.roc_path}")
