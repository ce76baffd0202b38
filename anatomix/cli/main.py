"""Entry point of the ``anatomix`` command.

Heavy libraries (torch, MONAI, torch_geometric) are imported inside the commands, so that
``anatomix --help`` answers at once.
"""

from __future__ import annotations

import click

from anatomix import __version__
from anatomix.cli.options import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="anatomix")
def cli() -> None:
    """Chest X-ray anatomy: segmentation, mask QC and normal-only anomaly screening."""


@cli.command()
def info() -> None:
    """Print the version, the torch device and the bundled models."""
    from anatomix.runtime import quiet_imports

    quiet_imports()
    import torch

    click.echo(f"anatomix {__version__}")
    click.echo(f"torch {torch.__version__}; device: {'cuda' if torch.cuda.is_available() else 'cpu'}"
               f" ({torch.get_num_threads()} threads)")
    from anatomix.models import list_models

    models = list_models()
    click.echo("bundled models:" if models else "bundled models: none")
    for m in models:
        click.echo(f"  {m.name:<16} {m.kind:<8} {'ok' if m.available else 'missing weights'}  {m.summary}")
    import importlib.util

    extras = [(name, module, importlib.util.find_spec(module) is not None)
              for name, module in (("dicom", "highdicom"), ("onnx", "onnxruntime"))]
    click.echo("optional extras: " + ", ".join(f"{n} ({m}) {'ok' if ok else 'missing'}" for n, m, ok in extras))


# the commands themselves import nothing heavy at module level
from anatomix.cli.anomaly import anomaly  # noqa: E402
from anatomix.cli.checkpoint import convert_checkpoint  # noqa: E402
from anatomix.cli.evaluate import evaluate  # noqa: E402
from anatomix.cli.export import export  # noqa: E402
from anatomix.cli.qc import qc  # noqa: E402
from anatomix.cli.segment import segment  # noqa: E402
from anatomix.cli.train import train  # noqa: E402

for command in (segment, qc, evaluate, train, anomaly, convert_checkpoint, export):
    cli.add_command(command)
