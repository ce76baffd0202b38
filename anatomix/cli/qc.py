"""``anatomix qc``: quality control of masks made by anatomix or anyone else."""

from __future__ import annotations

import click

from anatomix.cli import options


@click.command("qc")
@click.argument("source", type=click.Path(exists=True))
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="Folder of the images of a CheXmask CSV (found as <images>/<image_id>[.png|.jpg|...]), "
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
@options.max_pixels
@options.trust_checkpoint
def qc(source, images, reference, out, k, flip_model, no_rca, no_report, report_max, limit, max_pixels,
       trust_checkpoint):
    """Check masks and write a QC table and an HTML report.

    SOURCE is a CheXmask CSV (.csv/.csv.gz: RLE mask columns and/or Landmarks) or a folder of
    images with <stem>_lungR.png, <stem>_lungL.png, <stem>_heart.png masks next to them (0/1 or
    0/255), or DICOM-SEG files (a .dcm file, or a folder holding SEGs such as the dicom-seg/ folder
    of `anatomix segment --format dicom-seg`). Writes OUT/qc.csv (image_id, path, then the QC columns of anatomix.qc.QC_COLUMNS) and
    OUT/report/index.html (worst first; open it in a browser). Exit status 0 even when masks fail:
    read the qc_pass column.
    """
    import csv
    import itertools
    from pathlib import Path

    from anatomix.runtime import quiet_imports

    quiet_imports()
    from anatomix.errors import AnatomixError
    from anatomix.io.dicom_seg import find_seg_files, is_dicom_seg
    from anatomix.qc import QC_COLUMNS, assess, format_row, load_references
    from anatomix.qc.inputs import iter_chexmask, iter_dicom_seg, iter_folder
    from anatomix.qc.report import ReportWriter

    src = Path(source)
    if (src.is_file() and is_dicom_seg(src)) or (src.is_dir() and find_seg_files(src)):
        items = iter_dicom_seg(src, images, max_pixels)
    elif src.is_dir():
        items = iter_folder(src, max_pixels)
    elif src.name.lower().endswith((".csv", ".csv.gz")):
        items = iter_chexmask(src, images, max_pixels)
    else:
        raise click.UsageError(f"{src}: expected a folder, a CheXmask .csv/.csv.gz or a DICOM-SEG file")
    try:
        refs = None if no_rca else load_references(reference)
    except AnatomixError as e:
        raise click.ClickException(str(e))
    segmenter = None
    if flip_model:
        from anatomix.models import load_segmenter

        try:
            segmenter = load_segmenter(flip_model, trust=trust_checkpoint)
        except AnatomixError as e:
            raise click.ClickException(str(e))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = None if no_report else ReportWriter(out_dir / "report", f"anatomix QC: {src.name}",
                                                    max_cards=report_max)
    n = n_pass = 0
    with open(out_dir / "qc.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["image_id", "path", *QC_COLUMNS])
        writer.writeheader()
        for item in itertools.islice(items, limit):
            if item.seg is None:
                row = {c: float("nan") for c in QC_COLUMNS}
                row.update(qc_pass=False, qc_reasons=f"unreadable({item.error})", rca_references="")
                path = ""
            else:
                row = assess(item.seg, item.pixels, references=refs, run_rca=not no_rca, k=k,
                             segmenter=segmenter)
                path = str(item.seg.path or "")
            writer.writerow({"image_id": item.image_id, "path": path, **format_row(row)})
            f.flush()
            if report is not None:
                report.add(item.image_id, row, item.pixels, item.seg.masks if item.seg else None, path)
            n += 1
            n_pass += bool(row["qc_pass"])
    msg = f"{n} images: {n_pass} pass, {n - n_pass} flagged -> {out_dir / 'qc.csv'}"
    if report is not None:
        msg += f", {report.close()}"
    click.echo(msg)
