"""Training wiring of the graph segmenter: a :class:`anatomix.training.Task`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np
import torch

from anatomix.anatomy import TEMPLATES, dice, rasterize


@dataclass
class GraphTask:
    """HybridGNet family for :func:`anatomix.training.fit`.

    Attributes:
        config: the model's :class:`anatomix.graphs.model.GraphConfig`.
        kl_weight: final weight of the KL term.
        kl_warmup_epochs: the KL weight ramps linearly from 0 over these epochs.
    """

    config: Any
    kl_weight: float = 1e-6
    kl_warmup_epochs: int = 20

    def build_model(self) -> torch.nn.Module:
        from anatomix.graphs.model import HybridGNet

        return HybridGNet(self.config)

    def loss(self, model, batch, epoch: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        from anatomix.graphs.loss import hybrid_loss

        ramp = min(1.0, (epoch + 1) / max(1, self.kl_warmup_epochs))
        out = model(batch["image"])
        loss, parts = hybrid_loss(out, batch["landmarks"], self.kl_weight * ramp)
        return loss, {"loss": loss.item(), **parts}

    def validate(self, model, loader) -> Dict[str, float]:
        """Mean landmark error (model-frame px) and per-structure Dice in the model frame."""
        template = TEMPLATES[self.config.template]
        size = self.config.image_size
        errors, dices = [], {k: [] for k in template.keys}
        for batch in loader:
            pred = model(batch["image"]).landmarks.numpy() * size
            true = batch["landmarks"].numpy() * size
            errors.append(np.linalg.norm(pred - true, axis=-1).mean(axis=-1))
            for p, t in zip(pred, true):
                for k, sl in template.slices().items():
                    dices[k].append(dice(rasterize(p[sl], (size, size)), rasterize(t[sl], (size, size))))
        metrics = {f"dice_{k}": float(np.mean(v)) for k, v in dices.items()}
        metrics["landmark_px"] = float(np.concatenate(errors).mean())
        metrics["score"] = float(np.mean([np.mean(v) for v in dices.values()]))
        return metrics

    def checkpoint_extra(self) -> Dict[str, Any]:
        return {"family": "graph", "graph_config": self.config.to_dict()}
