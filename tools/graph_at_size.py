"""A graph checkpoint carried to another input size: the start of ``anatomix train graph --init``.

The encoder halves its input until the bottom is at most ``BOTTOM_MAX`` px, so a model at twice
the size has one more stride-2 stage, appended at the deep end with the last width
(:attr:`anatomix.graphs.model.GraphConfig.stage_channels`); the bottom map, the latent heads, the
graph decoder and the skips (the deepest ``n_skips`` stages) keep their shapes. Every tensor whose
name and shape exist in both models is copied; the others keep the new model's seeded
initialisation. The stages then see the film at twice the resolution, so the copy is a start for
training, not a model: fine-tune it at the new size.

Usage::

    python tools/graph_at_size.py --src anatomix/weights/hybridgnet_lungs_heart.pt --image-size 512 \\
        --out runs/graph512_init.pt

Prints the tensors that were not copied.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def carry_to_size(state: dict, image_size: int, seed: int = 0) -> tuple[dict, list[str]]:
    """(checkpoint payload of the model at ``image_size``, names of the tensors initialised anew).

    Args:
        state: a loaded graph checkpoint (``graph_config`` and ``model``).
    """
    import torch

    from anatomix.graphs.model import GraphConfig, HybridGNet

    config = GraphConfig.from_dict({**state["graph_config"], "image_size": image_size})
    torch.manual_seed(seed)
    model = HybridGNet(config)
    target, source = model.state_dict(), state["model"]
    new = [k for k, v in target.items() if k not in source or source[k].shape != v.shape]
    target.update({k: source[k] for k in target if k not in new})
    return {"family": "graph", "graph_config": config.to_dict(), "model": target}, new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True, help="a graph checkpoint")
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from anatomix.models import load_checkpoint, save_checkpoint

    payload, new = carry_to_size(load_checkpoint(args.src), args.image_size, args.seed)
    save_checkpoint(args.out, payload)
    print(f"{len(payload['model']) - len(new)} of {len(payload['model'])} tensors copied; initialised anew: {new}")


if __name__ == "__main__":
    main()
