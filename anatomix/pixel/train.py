"""Training wiring of the pixel segmenters: a :class:`anatomix.training.Task`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from anatomix.anatomy import dice


@dataclass
class PixelTask:
    """Dense multi-label segmenters for :func:`anatomix.training.fit`.

    The loss is MONAI's ``DiceCELoss`` with ``sigmoid=True`` (soft Dice + binary cross-entropy
    per channel: lungs and heart overlap, so channels are independent).

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
        from monai.losses import DiceCELoss

        self._loss = DiceCELoss(sigmoid=True, lambda_dice=self.lambda_dice, lambda_ce=self.lambda_ce)

    def build_model(self) -> torch.nn.Module:
        return self.config.build()

    def loss(self, model, batch, epoch: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        logits = model(batch["image"])
        loss = self._loss(logits, batch["masks"])
        return loss, {"loss": loss.item()}

    def validate(self, model, loader) -> Dict[str, float]:
        """Per-structure Dice of the thresholded probabilities (original frame when
        :attr:`reference` is set); ``score`` is their mean."""
        keys = self.config.keys
        dices: Dict[str, list] = {k: [] for k in keys}
        for batch in loader:
            prob = torch.sigmoid(model(batch["image"])).numpy()
            for p, t, i in zip(prob, batch["masks"].numpy(), batch["index"].tolist()):
                for c, k in enumerate(keys):
                    if self.reference is not None and self.reference.original_masks:
                        frame = self.reference.frames[i]
                        pred = frame.map_to_original(p[c]) >= self.config.threshold
                        dices[k].append(dice(pred, self.reference.original_masks[i][k]))
                    else:
                        dices[k].append(dice(p[c] >= self.config.threshold, t[c] > 0.5))
        metrics = {f"dice_{k}": float(np.mean(v)) for k, v in dices.items()}
        metrics["score"] = float(np.mean(list(metrics.values())))
        return metrics

    def checkpoint_extra(self) -> Dict[str, Any]:
        return {"family": "pixel", "pixel_config": self.config.to_dict()}


def bundle_checkpoint(src, dst) -> Dict[str, Any]:
    """Write the inference part of a training checkpoint (``best.pt``) to ``dst``.

    Keeps the weights, ``family``, ``pixel_config`` and the provenance (``epoch``,
    validation ``metrics``, ``train_config``); drops optimiser and RNG state. Returns what was
    written.
    """
    from anatomix.training import load_checkpoint, save_checkpoint

    state = load_checkpoint(src)
    if state.get("family") != "pixel":
        raise ValueError(f"{src} is not a pixel-model checkpoint")
    keep = {k: state[k] for k in ("model", "family", "pixel_config", "epoch", "metrics", "train_config")
            if k in state}
    save_checkpoint(Path(dst), keep)
    return keep
