"""``anatomix train``: fit segmenters on the data pack or a labelled folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from anatomix.models import TRUST_HELP


def load_split(data: Path, val_fraction: float, seed: int, out: Path):
    """Cases of the pack (``data`` holds ``cxr-seg``) or of a labelled folder, split and
    recorded in ``out/split.json`` so that evaluation uses the same held-out cases."""
    from anatomix.data.cases import labelled_cases, split_cases

    cases = labelled_cases(data)
    if not cases:
        raise click.UsageError(f"no labelled cases found in {data}")
    train, val = split_cases(cases, val_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps(
        {"data": str(data), "val_fraction": val_fraction, "seed": seed,
         "train": [c.case_id for c in train], "val": [c.case_id for c in val]}, indent=1))
    return train, val


def loop_options(f):
    """Options of the shared training loop."""
    for opt in reversed([
        click.option("--data", "data", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     required=True, help="The data pack (../shared/data) or a labelled folder."),
        click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Run folder: checkpoints, log.csv, split.json. Rerun to resume."),
        click.option("--epochs", default=300, show_default=True),
        click.option("--batch-size", default=16, show_default=True),
        click.option("--lr", default=1e-3, show_default=True),
        click.option("--seed", default=0, show_default=True),
        click.option("--val-fraction", default=0.2, show_default=True,
                     help="Fraction of patients held out for validation."),
        click.option("--val-every", default=5, show_default=True),
        click.option("--threads", default=0, help="torch threads (0: torch default)."),
        click.option("--workers", default=0, help="DataLoader worker processes."),
        click.option("--aug-strength", default=1.0, show_default=True,
                     help="Multiplies the spatial augmentation ranges (rotation 10 deg, zoom 10 %, shift 6 %)."),
        click.option("--init", "init_from", default="", help="Start from this checkpoint's weights (fine-tune)."),
        click.option("--trust-checkpoint", "trust_init", is_flag=True, help=f"For --init: {TRUST_HELP}"),
    ]):
        f = opt(f)
    return f


@click.group()
def train() -> None:
    """Train segmenters (graph or pixel) with one shared, resumable loop."""


@train.command("graph")
@loop_options
@click.option("--template", type=click.Choice(["lungs_heart", "full"]), default="lungs_heart", show_default=True)
@click.option("--image-size", default=256, show_default=True)
@click.option("--latent-dim", default=64, show_default=True)
@click.option("--encoder-channels", default="16,32,64,128,128", show_default=True,
              help="Widths of the encoder's stride-2 stages, comma-separated.")
@click.option("--graph-channels", default="128,128,64,64", show_default=True,
              help="Node feature widths per graph level, coarse to fine, comma-separated.")
@click.option("--kl-weight", default=1e-6, show_default=True,
              help="Weight of the KL term (summed over latent dims, mean over the batch).")
def graph(data, out, epochs, batch_size, lr, seed, val_fraction, val_every, threads, workers, aug_strength, init_from,
          template, image_size, latent_dim, encoder_channels, graph_channels, kl_weight, trust_init) -> None:
    """Train a HybridGNet landmark model."""
    from anatomix.runtime import quiet_imports

    quiet_imports()
    from anatomix.anatomy import TEMPLATES
    from anatomix.data.augment import AugmentConfig, LandmarkAugment
    from anatomix.data.datasets import LandmarkDataset
    from anatomix.graphs.model import GraphConfig
    from anatomix.graphs.train import GraphTask
    from anatomix.training import TrainConfig, fit

    train_cases, val_cases = load_split(data, val_fraction, seed, out)
    tmpl = TEMPLATES[template]
    click.echo(f"{len(train_cases)} training / {len(val_cases)} validation cases; preloading...")
    augment = LandmarkAugment(AugmentConfig().scaled(aug_strength), seed=seed)
    train_set = LandmarkDataset(train_cases, tmpl, image_size, augment)
    val_set = LandmarkDataset(val_cases, tmpl, image_size)
    widths = {"encoder_channels": tuple(int(c) for c in encoder_channels.split(",")),
              "graph_channels": tuple(int(c) for c in graph_channels.split(","))}
    task = GraphTask(GraphConfig(template=template, image_size=image_size, latent_dim=latent_dim, **widths),
                     kl_weight=kl_weight)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, val_every=val_every,
                      workers=workers, threads=threads, init_from=init_from, trust_init=trust_init)
    best = fit(task, train_set, val_set, cfg, out)
    click.echo(f"best checkpoint: {best}")


@train.command("pixel")
@loop_options
@click.option("--arch", default="monai_unet", show_default=True,
              help="Pixel architecture (monai_unet, flexible_unet, smp_unet, smp_fpn, ...).")
@click.option("--image-size", default=256, show_default=True)
@click.option("--channels", default="16,32,64,128,256", show_default=True,
              help="monai_unet: feature channels per level (comma-separated).")
@click.option("--res-units", default=2, show_default=True, help="monai_unet: residual units per level.")
@click.option("--encoder", default="resnet18", show_default=True,
              help="smp_*: encoder name (always built without pretrained weights).")
@click.option("--backbone", default="efficientnet-b0", show_default=True,
              help="flexible_unet: backbone (always built without pretrained weights).")
def pixel(data, out, epochs, batch_size, lr, seed, val_fraction, val_every, threads, workers, aug_strength, init_from,
          arch, image_size, channels, res_units, encoder, backbone, trust_init) -> None:
    """Train a dense (pixel) multi-label segmenter: lungR, lungL, heart (MONAI Dice + BCE)."""
    from anatomix.runtime import quiet_imports

    quiet_imports()
    from anatomix.data.augment import AugmentConfig, MaskAugment
    from anatomix.data.mask_dataset import MaskDataset
    from anatomix.pixel.models import PixelConfig, pixel_model_names
    from anatomix.pixel.train import PixelTask
    from anatomix.training import TrainConfig, fit

    if arch not in pixel_model_names():
        raise click.BadParameter(f"{arch!r}; valid: {', '.join(pixel_model_names())}", param_hint="--arch")
    if arch == "monai_unet":
        kwargs = {"channels": [int(c) for c in channels.split(",")], "num_res_units": res_units}
    elif arch == "flexible_unet":
        kwargs = {"backbone": backbone}
    else:
        kwargs = {"encoder_name": encoder}
    train_cases, val_cases = load_split(data, val_fraction, seed, out)
    click.echo(f"{len(train_cases)} training / {len(val_cases)} validation cases; preloading...")
    train_set = MaskDataset(train_cases, image_size, MaskAugment(AugmentConfig().scaled(aug_strength), seed=seed))
    val_set = MaskDataset(val_cases, image_size, keep_original=True)
    task = PixelTask(PixelConfig(arch=arch, image_size=image_size, kwargs=kwargs), reference=val_set)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, val_every=val_every,
                      workers=workers, threads=threads, init_from=init_from, trust_init=trust_init)
    best = fit(task, train_set, val_set, cfg, out)
    click.echo(f"best checkpoint: {best}")
