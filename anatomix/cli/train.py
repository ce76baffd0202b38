"""``anatomix train``: fit segmenters on the data pack or a labelled folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import click

from anatomix.cli import options
from anatomix.models import TRUST_HELP


def load_split(data: Sequence[Path], val_fraction: float, seed: int, out: Path, sources: str = ""):
    """Cases of every ``data`` folder (the pack, a pack folder such as ``cxr-lungs``, or a
    labelled folder), split by patient and stratified by source and label (``seed``: the
    split's seed, not the training's), and recorded in ``out/split.json`` so that evaluation
    uses the same held-out cases."""
    from collections import Counter

    from anatomix.data.cases import labelled_cases, split_cases

    keep = tuple(s for s in sources.split(",") if s) or None
    cases = [c for folder in data for c in labelled_cases(folder, keep)]
    if not cases:
        raise click.UsageError(f"no labelled cases found in {', '.join(map(str, data))}")
    train, val = split_cases(cases, val_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps(
        {"data": [str(d) for d in data], "sources": keep, "val_fraction": val_fraction, "split_seed": seed,
         "train": [c.case_id for c in train], "val": [c.case_id for c in val]}, indent=1))
    held = {c.case_id for c in val}
    counts = Counter((c.source, c.case_id in held) for c in cases)
    click.echo("; ".join(f"{s}: {counts[(s, False)]} train / {counts[(s, True)]} val"
                         for s in sorted({c.source for c in cases})))
    return train, val


def training_inputs(train_set, balance: bool, seed: int):
    """The training dataset as the loop sees it: source-balanced unless ``balance`` is off."""
    from anatomix.data.datasets import SourceBalanced

    return SourceBalanced(train_set, seed=seed) if balance else train_set


def augment_config(recipe: str, strength: float):
    """The named augmentation recipe (``sites`` or ``jsrt``) with its spatial ranges scaled."""
    from anatomix.data.augment import AugmentConfig

    base = AugmentConfig.sites() if recipe == "sites" else AugmentConfig()
    return base.scaled(strength)


def _device(ctx, param, value: str) -> str:
    """Refuse an unknown device name before the data are read."""
    from anatomix.runtime import resolve_device

    try:
        resolve_device(value)
    except RuntimeError as e:
        raise click.BadParameter(str(e)) from None
    return value


def loop_options(f):
    """Options of the shared training loop."""
    for opt in reversed([
        click.option("--data", "data", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     required=True, multiple=True,
                     help="The data pack (../shared/data: cxr-seg and cxr-lungs), one of its folders, or a "
                          "labelled folder (<id>.png + <id>_<structure>.png); repeat to train on several."),
        click.option("--sources", default="", help="Comma-separated manifest sources to keep "
                     "(jsrt, montgomery, shenzhen); default: all."),
        click.option("--balance/--no-balance", default=True, show_default=True,
                     help="Every source gets the same share of each epoch."),
        click.option("--crop-borders/--no-crop-borders", default=True, show_default=True,
                     help="Crop black/white border bands to the exposed field before the model "
                          "(saved in the checkpoint; inference does the same)."),
        click.option("--augment", "augment_recipe", type=click.Choice(["sites", "jsrt"]), default="sites",
                     show_default=True, help="Augmentation recipe: 'sites' looks like other hospitals "
                     "(tilt, zoom, wide borders, blur, noise, inverted contrast); 'jsrt' the first recipe."),
        click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Run folder: checkpoints, log.csv, split.json. Rerun to resume."),
        click.option("--epochs", default=300, show_default=True),
        click.option("--batch-size", default=16, show_default=True),
        click.option("--lr", default=1e-3, show_default=True),
        click.option("--seed", default=0, show_default=True,
                     help="Seed of the initialisation, augmentation and batch order."),
        click.option("--split-seed", default=0, show_default=True,
                     help="Seed of the train/validation split; keep it when you train ensemble members "
                          "with other --seed values, so that none of them sees the validation cases."),
        click.option("--val-fraction", default=0.2, show_default=True,
                     help="Fraction of patients held out for validation."),
        click.option("--val-every", default=5, show_default=True),
        click.option("--threads", default=0, help="torch threads (0: torch default)."),
        click.option("--device", default="auto", show_default=True, callback=_device,
                     help="Where to train: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ..."),
        click.option("--workers", default=0, help="DataLoader worker processes."),
        click.option("--aug-strength", default=1.0, show_default=True,
                     help="Multiplies the spatial augmentation ranges (rotation 10 deg, zoom 10 %, shift 6 %)."),
        click.option("--init", "init_from", default="", help="Start from this checkpoint's weights (fine-tune)."),
        click.option("--trust-checkpoint", "trust_init", is_flag=True, help=f"For --init: {TRUST_HELP}"),
    ]):
        f = opt(f)
    return f


@click.group(cls=options.Group)
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
@click.option("--mask-weight", default=1.0, show_default=True,
              help="Weight of the mask loss (Chamfer between contours and mask boundaries), which "
                   "lets cases without landmarks teach the contours.")
def graph(data, out, epochs, batch_size, lr, seed, split_seed, val_fraction, val_every, threads, device, workers,
          aug_strength, init_from, trust_init, sources, balance, crop_borders, augment_recipe, template, image_size,
          latent_dim, encoder_channels, graph_channels, kl_weight, mask_weight) -> None:
    """Train a HybridGNet landmark model."""
    from anatomix.runtime import quiet_imports

    quiet_imports()
    from anatomix.anatomy import TEMPLATES
    from anatomix.data.augment import LandmarkAugment
    from anatomix.data.datasets import LandmarkDataset
    from anatomix.graphs.model import GraphConfig
    from anatomix.graphs.train import GraphTask
    from anatomix.training import TrainConfig, fit

    train_cases, val_cases = load_split(data, val_fraction, split_seed, out, sources)
    tmpl = TEMPLATES.get(template)
    click.echo(f"{len(train_cases)} training / {len(val_cases)} validation cases; preloading...")
    augment = LandmarkAugment(augment_config(augment_recipe, aug_strength), seed=seed)
    train_set = LandmarkDataset(train_cases, tmpl, image_size, augment, crop_borders)
    val_set = LandmarkDataset(val_cases, tmpl, image_size, crop_borders=crop_borders, keep_masks=True)
    widths = {"encoder_channels": tuple(int(c) for c in encoder_channels.split(",")),
              "graph_channels": tuple(int(c) for c in graph_channels.split(","))}
    config = GraphConfig(template=template, image_size=image_size, latent_dim=latent_dim,
                         crop_borders=crop_borders, **widths)
    task = GraphTask(config, kl_weight=kl_weight, mask_weight=mask_weight)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, val_every=val_every,
                      workers=workers, threads=threads, init_from=init_from, trust_init=trust_init,
                      device=device)
    best = fit(task, training_inputs(train_set, balance, seed), val_set, cfg, out)
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
def pixel(data, out, epochs, batch_size, lr, seed, split_seed, val_fraction, val_every, threads, device, workers,
          aug_strength, init_from, trust_init, sources, balance, crop_borders, augment_recipe, arch, image_size,
          channels, res_units, encoder, backbone) -> None:
    """Train a dense (pixel) multi-label segmenter: lungR, lungL, heart (soft Dice + BCE per channel)."""
    from anatomix.runtime import quiet_imports

    quiet_imports()
    from anatomix.data.augment import MaskAugment
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
    train_cases, val_cases = load_split(data, val_fraction, split_seed, out, sources)
    click.echo(f"{len(train_cases)} training / {len(val_cases)} validation cases; preloading...")
    augment = MaskAugment(augment_config(augment_recipe, aug_strength), seed=seed)
    train_set = MaskDataset(train_cases, image_size, augment, crop_borders=crop_borders)
    val_set = MaskDataset(val_cases, image_size, keep_original=True, crop_borders=crop_borders)
    config = PixelConfig(arch=arch, image_size=image_size, kwargs=kwargs, crop_borders=crop_borders)
    task = PixelTask(config, reference=val_set)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, val_every=val_every,
                      workers=workers, threads=threads, init_from=init_from, trust_init=trust_init,
                      device=device)
    best = fit(task, training_inputs(train_set, balance, seed), val_set, cfg, out)
    click.echo(f"best checkpoint: {best}")
