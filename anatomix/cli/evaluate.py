"""``anatomix evaluate``: segmentation quality of a model on labelled cases."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

import click

from anatomix.cli import options


@click.command("evaluate", cls=options.Command)
@click.option("--model", default="refined", show_default=True, help="Bundled name (refined, graph, pixel) or checkpoint path.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The data pack (../shared/data: every labelled source), one of its folders, or a "
                   "labelled folder (<id>.png + <id>_<structure>.png).")
@click.option("--sources", default="", help="Comma-separated manifest sources to keep (jsrt, montgomery, "
                                            "shenzhen); default: all.")
@click.option("--split", "split_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A split.json from `anatomix train`: evaluate its validation cases. "
                   "Default: the same held-out split (fraction 0.2, seed 0) for the pack, all cases for a folder.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one row per case and structure to this CSV.")
@click.option("--spacing", type=float, help="Pixel spacing in mm when the files do not say it "
                                            "(JSRT pack cases: 0.7 mm at 512 px, known).")
@click.option("--device", default="auto", show_default=True)
@options.trust_checkpoint
def evaluate(model: str, data: Path, sources: str, split_file: Optional[Path], out: Optional[Path],
             spacing: Optional[float], device: str, trust_checkpoint: bool) -> None:
    """Dice, HD95 (px and mm), landmark error and topological errors per source and structure."""
    from anatomix.runtime import quiet_imports

    quiet_imports()
    from tqdm.auto import tqdm

    from anatomix.anatomy import contour_self_intersects
    from anatomix.data.cases import is_pack, labelled_cases, split_cases
    from anatomix.data.datasets import case_landmarks
    from anatomix.errors import AnatomixError
    from anatomix.evaluation import case_spacing, evaluate_case, summarise
    from anatomix.io import read_mask, read_radiograph
    from anatomix.models import load_segmenter
    from anatomix.runtime import resolve_device

    try:
        segmenter = load_segmenter(model, resolve_device(device), trust=trust_checkpoint)
    except AnatomixError as e:
        raise click.BadParameter(str(e), param_hint="'--model'") from None
    cases = labelled_cases(data, tuple(s for s in sources.split(",") if s) or None)
    if split_file is not None:
        keep = set(json.loads(split_file.read_text())["val"])
        cases = [c for c in cases if c.case_id in keep]
    elif is_pack(data):
        cases = split_cases(cases)[1]
    if not cases:
        raise click.UsageError(f"no labelled cases to evaluate in {data}")
    template = segmenter.template
    rows, crossed = [], 0
    for case in tqdm(cases, desc="evaluate", unit="image"):
        seg = segmenter.predict([read_radiograph(case.image)])[0]
        truth = {k: read_mask(p) for k, p in case.masks.items()}
        landmarks = case_landmarks(case, template) if case.landmarks is not None else None
        rows += [{"source": case.source, **row}
                 for row in evaluate_case(seg, truth, landmarks, case_spacing(case.meta) or spacing)]
        crossed += sum(contour_self_intersects(c) for c in template.split(seg.landmarks).values())
    summary = summarise(rows)
    click.echo(f"model {model}: {len(cases)} cases\n")
    click.echo("| source | structure | n | Dice mean ± sd | Dice min | HD95 px | HD95 mm | landmark px "
               "| topological errors |")
    click.echo("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        click.echo(f"| {s['source']} | {s['structure']} | {s['n']} | {s['dice_mean']:.4f} ± {s['dice_std']:.4f} | "
                   f"{s['dice_min']:.4f} | {s['hd95_px']:.2f} | {s['hd95_mm']:.2f} | {s['landmark_px']:.2f} "
                   f"| {s['topology_errors']} |")
    n_contours = len(cases) * len(template.structures)
    click.echo(f"\nself-intersecting contours: {crossed} of {n_contours} ({100 * crossed / n_contours:.1f}%)")
    if out is not None:
        from anatomix.io import atomic_write

        with atomic_write(out) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            w.writeheader()
            w.writerows(rows)
