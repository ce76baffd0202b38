"""``anatomix qc``: quality control of masks made by anatomix or anyone else."""

from __future__ import annotations

import click

from anatomix.cli import options


@click.command("qc", cls=options.Command)
@click.argument("source", type=click.Path(exists=True))
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="Folder of the images of a CheXmask CSV (found as <images>/<image_id>[.png|.jpg|...], else at "
                   "the CSV's path column when that file exists), "
                   "or of the DICOM sources of DICOM-SEG files (found by the SOP Instance UID they reference).")
@click.option("--reference", default=None, type=click.Path(exists=True),
              help="RCA reference set: labelled folder (<id>.png + <id>_lungR/_lungL/_heart.png) "
                   "or .npz. Default: the bundled derived atlases.")
@click.option("-o", "--out", default="qc_out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder: qc.csv and report/index.html.")
@click.option("-k", "--k", "k", default=4, show_default=True, help="References registered per image (RCA).")
@click.option("--flip-model", default=None,
              help="Graph model (registry name such as 'graph', or a checkpoint) for the mirrored-image "
                   "test: it segments each image flipped left-right; if that result is more typical than "
                   "the masks checked, the image is flagged 'mirrored'. Off by default.")
@click.option("--no-rca", is_flag=True, help="Skip RCA (plausibility and shape checks only; fast).")
@click.option("--no-report", is_flag=True, help="Do not write the HTML report.")
@click.option("--report-max", type=int, default=1000, show_default=True,
              help="Images shown in the report (the worst ones); the summary counts all.")
@click.option("--limit", type=int, default=None, help="Check only the first N images.")
@options.engine
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@options.max_pixels
@options.trust_checkpoint
def qc(source, images, reference, out, k, flip_model, no_rca, no_report, report_max, limit, engine, address,
       num_workers, cpus_per_worker, gpus_per_worker, progress, max_pixels, trust_checkpoint):
    """Check masks and write a QC table and an HTML report.

    SOURCE is a CheXmask CSV (.csv/.csv.gz: RLE mask columns and/or Landmarks) or a folder of
    images with <stem>_lungR.png, <stem>_lungL.png, <stem>_heart.png masks next to them (0/1 or
    0/255), or DICOM-SEG files (a .dcm file, or a folder holding SEGs such as the dicom-seg/ folder
    of `anatomix segment --format dicom-seg`). Writes OUT/qc.csv (image_id, path, then the QC columns of anatomix.qc.QC_COLUMNS) and
    OUT/report/index.html (worst first, with a summary per source folder; open it in a browser).

    Each mask set gets a predicted Dice per structure (the bundled model of
    anatomix/weights/qc_dice_model.json, from RCA, the masks' agreement with the bundled graph
    and pixel models run on the image, node uncertainty and plausibility); qc_pass is true when
    the mean predicted Dice reaches the model's threshold and no hard check fails (topology,
    swapped sides, heart outside the thorax, rotated or mirrored film). Exit status 0 even when
    masks fail: read the qc_pass column.
    """
    from anatomix.runtime import quiet_imports

    quiet_imports()
    from anatomix.qc.run import run_qc

    chosen = options.make_engine(engine, 0, address, num_workers, cpus_per_worker, gpus_per_worker)
    summary = run_qc(source, out, images=images, reference=reference, k=k, flip_model=flip_model,
                     rca=not no_rca, report=not no_report, report_max=report_max, limit=limit,
                     max_pixels=max_pixels, trust=trust_checkpoint, engine=chosen, progress=progress)
    click.echo(summary.line())
