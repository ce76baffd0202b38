"""Options shared by several commands: the trust opt-in for checkpoints and the image-size limit."""

from __future__ import annotations

import click

from anatomix.limits import MAX_PIXELS
from anatomix.models import TRUST_HELP

trust_checkpoint = click.option("--trust-checkpoint", "trust_checkpoint", is_flag=True, help=TRUST_HELP)
"""``--trust-checkpoint``: read a model/detector/checkpoint file with a full unpickle."""

max_pixels = click.option(
    "--max-pixels", "max_pixels", type=click.IntRange(min=256), default=MAX_PIXELS, show_default=True,
    help="Largest image accepted, in pixels (rows x columns), in every format; checked against the "
         "size the file declares before anything is decoded. A larger file is one line in errors.csv.")
"""``--max-pixels``: the readers' limit (:data:`anatomix.limits.MAX_PIXELS` by default)."""
