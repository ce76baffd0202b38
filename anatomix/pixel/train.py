"""Training wiring of the pixel segmenters: a :class:`anatomix.training.Task`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from anatomix.anatomy import dice


@dataclass
class PixelTask:
    """Dense multi-label segmenters for :func:`anatomix.training.fit`.

    The loss is soft Dice (MONAI ``DiceLoss``, ``sigmoid=True``) + binary cross-entropy per
    case and channel (lungs and heart overlap, so channels are independent), averaged over the
    (case, channel) pairs that are labelled (``has_mask``): a structure a case does not label
    contributes no loss and no gradient. (MONAI's ``DiceCELoss(sigmoid=True)``, used before,
    applies softmax cross-entropy across channels when there are several, which suits
    exclusive classes, not overlapping structures.)

    Attributes:
        config: the model's :class:`anatomix.pixel.models.PixelConfig`.
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
        reference: optional :class:`anatomix.data.mask_dataset.MaskDataset` built with
            ``keep_original=True`` whose items the validation loader yields; when given,
            validation Dice is measured in each case's original frame (after
            ``SquareFrame.mask_to_original``), else in the model frame.
    """

    config: Any
    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
    reference: Optional[Any] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from monai.losses import DiceLoss

        self._dice = DiceLoss(sigmoid=True, reduction="none")

    def build_model(self) -> torch.nn.Module:
        return self.config.build()

    def loss(self, model, batch, epoch: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        logits = model(batch["image"])
        loss = partial_dice_ce(logits, batch["masks"], batch.get("has_mask"), self._dice,
                               self.lambda_dice, self.lambda_ce)
        return loss, {"loss": loss.item()}

    def validate(self, model, loader) -> Dict[str, float]:
        """Dice of the thresholded probabilities per source and labelled structure (original
        frame when :attr:`reference` is set); ``score`` weighs every source the same."""
        from anatomix.evaluation import per_source_scores
        from anatomix.training import model_device

        keys = self.config.keys
        data = loader.dataset
        dices: Dict[tuple, list] = {}
        for batch in loader:
            prob = torch.sigmoid(model(batch["image"].to(model_device(model)))).cpu().numpy()
            has_mask = batch.get("has_mask", torch.ones(prob.shape[:2], dtype=torch.bool)).numpy()
            for p, t, has, i in zip(prob, batch["masks"].numpy(), has_mask, batch["index"].tolist()):
                for c, k in enumerate(keys):
                    if not has[c]:
                        continue
                    if self.reference is not None and self.reference.original_masks:
                        frame = self.reference.frames[i]
                        pred = frame.map_to_original(p[c]) >= self.config.threshold
                        d = dice(pred, self.reference.original_masks[i][k])
                    else:
                        d = dice(p[c] >= self.config.threshold, t[c] > 0.5)
                    source = data.cases[i].source if hasattr(data, "cases") else "all"
                    dices.setdefault((source, k), []).append(d)
        return per_source_scores(dices)

    def checkpoint_extra(self) -> Dict[str, Any]:
        return {"family": "pixel", "pixel_config": self.config.to_dict()}


def partial_dice_ce(logits: torch.Tensor, target: torch.Tensor, has_mask: Optional[torch.Tensor],
                    dice_loss, lambda_dice: float = 1.0, lambda_ce: float = 1.0) -> torch.Tensor:
    """Soft Dice + BCE per (case, channel), averaged over the labelled pairs.

    Shapes:
        logits, target: (B, C, S, S); has_mask: (B, C) bool or None (all labelled) -> scalar

    ``dice_loss`` is a MONAI ``DiceLoss(sigmoid=True, reduction="none")``. With no labelled
    pair the loss is 0 (still connected to the graph, so backward works).
    """
    import torch.nn.functional as F

    per = lambda_dice * dice_loss(logits, target).flatten(2).mean(-1) \
        + lambda_ce * F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).mean(-1)
    keep = torch.ones_like(per) if has_mask is None else has_mask.to(per.dtype)
    return (per * keep).sum() / keep.sum().clamp(min=1.0)


def bundle_checkpoint(src, dst) -> Dict[str, Any]:
    """Write the inference part of a training checkpoint (``best.pt``), or of several as one
    deep ensemble, to ``dst``.

    Args:
        src: a checkpoint path, or a list of them: members of one architecture and
            preprocessing (equal ``pixel_config``), averaged as one network by
            :class:`~anatomix.pixel.models.MeanOfMembers` (``pixel_config["members"]``).
        dst: the file to write.

    Keeps the weights, ``family``, ``pixel_config`` and the provenance (``epoch``,
    validation ``metrics``, ``train_config``; for an ensemble, one such dict per member under
    ``members``); drops optimiser and RNG state. Returns what was written.

    Raises:
        CheckpointError: not a single pixel model, or members whose configs differ.
    """
    from anatomix.errors import CheckpointError
    from anatomix.training import load_checkpoint, save_checkpoint

    srcs = [src] if isinstance(src, (str, Path)) else list(src)
    states = [load_checkpoint(s) for s in srcs]
    for s, state in zip(srcs, states):
        if state.get("family") != "pixel" or "pixel_config" not in state:
            raise CheckpointError(s, "not a pixel-model checkpoint")
        if state["pixel_config"].get("members", 1) != 1:
            raise CheckpointError(s, "already an ensemble: join its members' own checkpoints instead")
    provenance = [{k: st[k] for k in ("epoch", "metrics", "train_config") if k in st} for st in states]
    if len(states) == 1:
        keep = {"model": states[0]["model"], "family": "pixel", "pixel_config": states[0]["pixel_config"],
                **provenance[0]}
    else:
        config = {**states[0]["pixel_config"], "members": 1}  # files written before `members` lack it
        for s, state in zip(srcs[1:], states[1:]):
            if {**state["pixel_config"], "members": 1} != config:
                raise CheckpointError(s, f"its pixel_config differs from {srcs[0]}'s: not one ensemble")
        keep = {"model": {f"members.{i}.{k}": v for i, st in enumerate(states) for k, v in st["model"].items()},
                "family": "pixel", "pixel_config": {**config, "members": len(states)}, "members": provenance}
    save_checkpoint(Path(dst), keep)
    return keep
