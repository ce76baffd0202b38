"""What every command shares: the error mapping (:class:`Command`, :class:`Group`), the trust
opt-in for checkpoints and the image-size limit."""

from __future__ import annotations

import click

from anatomix.errors import AnatomixError
from anatomix.limits import MAX_PIXELS
from anatomix.models import TRUST_HELP


class CommandError(click.ClickException):
    """An :class:`~anatomix.errors.AnatomixError` a command let through: ``Error: <message>``, exit 2."""

    exit_code = 2


class Command(click.Command):
    """A command whose :class:`~anatomix.errors.AnatomixError` becomes exit status 2 with its message.

    Commands parse options, call one library function and print; they catch the package's
    errors only where they add a hint (which option was wrong).
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AnatomixError as e:
            raise CommandError(str(e)) from None


class Group(click.Group):
    """A group of :class:`Command` (the same error mapping)."""

    command_class = Command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AnatomixError as e:
            raise CommandError(str(e)) from None


Group.group_class = Group

trust_checkpoint = click.option("--trust-checkpoint", "trust_checkpoint", is_flag=True, help=TRUST_HELP)
"""``--trust-checkpoint``: read a model/detector/checkpoint file with a full unpickle."""

max_pixels = click.option(
    "--max-pixels", "max_pixels", type=click.IntRange(min=256), default=MAX_PIXELS, show_default=True,
    help="Largest image accepted, in pixels (rows x columns), in every format; checked against the "
         "size the file declares before anything is decoded. A larger file is one line in errors.csv.")
"""``--max-pixels``: the readers' limit (:data:`anatomix.limits.MAX_PIXELS` by default)."""


def engine(f):
    """``--engine``, ``--address``, ``--num-workers``, ``--cpus-per-worker``, ``--gpus-per-worker``."""
    decorators = [
        click.option("--engine", "engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="local: this process (threads); ray: Ray Data actors on a local Ray instance or a "
                          "cluster (needs anatomix[ray]); same outputs, byte for byte."),
        click.option("--address", default=None,
                     help="Ray: the cluster ('auto', 'ray://host:port'); default: join this machine's Ray "
                          "instance or start one. The output folder must be on a filesystem every node reaches."),
        click.option("--num-workers", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Ray: actors, each with its own copy of the model."),
        click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Ray: CPUs each actor reserves (default: the cluster's CPUs but one, shared, at most 1)."),
        click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Ray: GPUs each actor reserves."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def make_engine(engine: str, workers: int, address, num_workers: int, cpus_per_worker, gpus_per_worker):
    """The engine that the ``engine`` options name (UsageError when Ray is missing)."""
    from anatomix.batch.engines import engine_from_name

    return engine_from_name(engine, workers, address=address, num_workers=num_workers,
                            cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker)

