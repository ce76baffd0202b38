"""``anatomix segment``: the batch command, a thin shell over :func:`anatomix.batch.segment_batch`."""

from __future__ import annotations

from pathlib import Path

import click

from anatomix.cli import options

EPILOG = """\b
Outputs in OUT:
  segmentations.csv              CheXmask layout: image_id, path, Height, Width, Landmarks,
                                 Right Lung, Left Lung, Heart (RLE), QC columns
  masks/<id>_<structure>.png     0/255 masks at original size (.nii.gz with --format nifti)
  dicom-seg/<id>.dcm             with --format dicom-seg: one DICOM-SEG per DICOM input,
                                 referencing it (needs anatomix[dicom]); notes.csv names
                                 the inputs that got none (not DICOM)
  overlays/<id>.png              with --overlays
  errors.csv                     path, reason for every input that failed
                                 (unreadable, or larger than --max-pixels)
\b
Rerun the same command to resume: finished images are kept, the rest is done
(keep --batch-size as it was: results are then bit-identical to an uninterrupted run).
Exit status: 0 all segmented, 1 some failed (see errors.csv), 2 usage error.
"""


@click.command("segment", cls=options.Command, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out", required=True,
              type=click.Path(file_okay=False, dir_okay=True, path_type=Path),
              help="Output folder (created; rerun on it to resume).")
@click.option("--model", default="refined", show_default=True,
              help="Bundled model name (refined: graph contours on the pixel model's boundaries; graph; "
                   "pixel) or a checkpoint path.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Images per model call (keep it when resuming).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0),
              help="Threads decoding ahead of and writing behind the model (0: all in one thread).")
@click.option("--format", "formats", type=click.Choice(["png", "nifti", "dicom-seg"]), multiple=True,
              default=("png",), show_default=True, help="Mask format; repeat for several.")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="torch threads for the model (0: torch's default, all cores).")
@click.option("--overlays", is_flag=True, help="Also write overlays/<id>.png.")
@click.option("--overwrite", is_flag=True, help="Redo images that an earlier run finished (also the way to reuse a folder another model wrote).")
@click.option("--no-qc", is_flag=True, help="Skip the mask QC columns.")
@click.option("--uncertainty", default=10, show_default=True, type=click.IntRange(min=0),
              help="Latent draws per image for node-wise uncertainty (graph models; QC column "
                   "node_std_mean); 0 skips it.")
@click.option("--runtime", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="onnx: run the model with onnxruntime (CPU; needs anatomix[onnx]); --model is then a "
                   "bundled name or checkpoint (exported in memory) or a folder written by "
                   "`anatomix export MODEL --format onnx`. Same pipeline, outputs equal within float "
                   "tolerance, node-wise uncertainty included.")
@options.engine
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")
@options.max_pixels
@options.trust_checkpoint
def segment(inputs: tuple[str, ...], out: Path, model: str, device: str, batch_size: int, workers: int,
            threads: int, formats: tuple[str, ...], overlays: bool, overwrite: bool, no_qc: bool,
            uncertainty: int, runtime: str, engine: str, address: str | None, num_workers: int,
            cpus_per_worker: float | None, gpus_per_worker: float, progress: bool | None, max_pixels: int,
            trust_checkpoint: bool) -> None:
    """Segment lungs and heart in every radiograph of INPUTS.

    INPUTS are files, directories (searched recursively), glob patterns, or .txt / .csv files
    listing paths. Every format anatomix reads: PNG, JPEG, TIFF (8/16-bit), DICOM, NIfTI, .npy.
    """
    from anatomix.runtime import quiet_imports

    quiet_imports()
    from anatomix.batch import segment_batch
    from anatomix.errors import AnatomixError
    from anatomix.io.inputs import expand_inputs
    from anatomix.models import load_segmenter
    from anatomix.runtime import resolve_device

    if out.exists() and not out.is_dir():
        raise click.BadParameter(f"{out} exists and is not a directory", param_hint="'-o' / '--out'")
    if engine == "ray" and runtime == "onnx":
        raise click.UsageError("--engine ray runs the torch runtime only (onnxruntime sessions do not travel)")
    chosen = options.make_engine(engine, workers, address, num_workers, cpus_per_worker, gpus_per_worker)
    paths, bad = expand_inputs(inputs)
    if not paths and not bad:
        raise click.UsageError(f"no radiographs found in {', '.join(inputs)}")
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        dev = resolve_device(device)
    except (RuntimeError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint="'--device'") from None
    if dev.type == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter("CUDA is not available on this machine", param_hint="'--device'")
    try:
        if runtime == "onnx":
            from anatomix.export.runtime import load_onnx_segmenter

            segmenter = load_onnx_segmenter(model, trust=trust_checkpoint, threads=threads or None)
        else:
            segmenter = load_segmenter(model, dev, trust=trust_checkpoint)
        if hasattr(segmenter, "uncertainty_samples") and not no_qc:
            segmenter.uncertainty_samples = uncertainty
    except AnatomixError as e:
        raise click.BadParameter(str(e), param_hint="'--model'") from None
    summary = segment_batch(inputs, out, segmenter, batch_size=batch_size, workers=workers,
                            formats=formats, overlays=overlays, overwrite=overwrite,
                            qc=not no_qc, progress=progress, max_pixels=max_pixels,
                            expanded=(paths, bad), engine=chosen)
    click.echo(summary.line())
    raise SystemExit(summary.exit_code)


if __name__ == "__main__":  # python -m anatomix.cli.segment ...
    segment()
