"""``anatomix export``: a model as a MONAI Bundle or as ONNX, a thin shell over :mod:`anatomix.export`."""

from __future__ import annotations

from pathlib import Path

import click

from anatomix.cli import options

EPILOG = """\b
bundle: DIR/configs/metadata.json, DIR/configs/inference.json, DIR/models/model.pt,
        DIR/docs/README.md (the model card), DIR/docs/license.txt. Run it with MONAI:
        python -m monai.bundle run --config_file DIR/configs/inference.json \\
            --meta_file DIR/configs/metadata.json --bundle_root DIR \\
            --dataset_dir scans/ --output_dir out/
        (graph, pixel and anomaly models; needs anatomix installed where it runs)
onnx:   DIR/model.onnx (graph.onnx + pixel.onnx for a refined model; graph models add
        *_decoder.onnx for latent sampling), DIR/anatomix_onnx.json
        (inputs, outputs, preprocessing, opset, parity); anomaly detectors add DIR/detector.pt.
        Run it with: anatomix segment scans/ -o out/ --runtime onnx --model DIR
        (needs anatomix[onnx])
"""


@click.command("export", cls=options.Command, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["bundle", "onnx"]), required=True, help="What to write.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created).")
@options.trust_checkpoint
def export(model: str, fmt: str, out: Path, trust_checkpoint: bool) -> None:
    """Export MODEL (bundled name: graph, pixel, anomaly...; or a checkpoint) for MONAI or ONNX tools.

    Every exported network takes the model input of anatomix's preprocessing, image
    (B, 1, S, S) float32 in [0, 1]; the bundle and anatomix_onnx.json say which, and what comes out.
    """
    from anatomix.runtime import quiet_imports

    quiet_imports()
    from anatomix.errors import AnatomixError
    from anatomix.export import load_spec

    try:
        spec = load_spec(model, trust=trust_checkpoint)
    except AnatomixError as e:
        raise click.BadParameter(str(e), param_hint="'MODEL'") from None
    if fmt == "onnx":
        from anatomix.export.onnx import export_onnx

        info = export_onnx(spec, out)
        for v in info["parts"].values():
            diffs = ", ".join(f"{k} {d:.2g}" for k, d in v["parity_random_inputs"].items())
            click.echo(f"{out / v['file']}: opset {info['opset']}, max |torch - onnxruntime| {diffs}")
    else:
        from anatomix.export.bundle import export_bundle

        export_bundle(spec, out)
        click.echo(f"{out}: MONAI bundle of {spec.name} ({spec.kind}); run: python -m monai.bundle run "
                   f"--config_file {out}/configs/inference.json --meta_file {out}/configs/metadata.json "
                   f"--bundle_root {out} --dataset_dir IMAGES --output_dir OUT")
