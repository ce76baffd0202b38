"""``anatomix evaluate``: segmentation quality of a model on labelled cases."""

from __future__ import annotations

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
    from anatomix.data.cases import is_pack, labelled_cases, split_cases
    from anatomix.errors import AnatomixError
    from anatomix.evaluation import evaluate_model
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
    result = evaluate_model(segmenter, cases, spacing)
    click.echo(f"model {model}: {len(cases)} cases\n")
    click.echo(result.table())
    click.echo(f"\nself-intersecting contours: {result.crossed} of {result.n_contours} "
               f"({100 * result.crossed / result.n_contours:.1f}%)")
    if out is not None:
        result.write_csv(out)
