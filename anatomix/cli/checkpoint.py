"""``anatomix convert-checkpoint``: rewrite an old checkpoint so that it loads without trust."""

from __future__ import annotations

from pathlib import Path

import click

from anatomix.cli import options


@click.command("convert-checkpoint", cls=options.Command)
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path))
@options.trust_checkpoint
def convert_checkpoint(old: Path, new: Path, trust_checkpoint: bool) -> None:
    """Rewrite checkpoint OLD as NEW in plain types (tensors, numbers, strings, lists, dicts).

    NEW loads with torch.load(weights_only=True) and everywhere in anatomix without
    --trust-checkpoint; every tensor is checked identical after reading NEW back. An OLD that
    needs a full unpickle (objects beyond those types) is converted only with
    --trust-checkpoint, which RUNS CODE FROM OLD: use it only on files you trust.
    Exit status 2 when OLD is refused or cannot be converted.
    """
    from anatomix.models import convert_checkpoint as convert

    n = convert(old, new, trust=trust_checkpoint)
    click.echo(f"{old} -> {new}: {n} tensors, identical; loads with weights_only=True")
