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

    Batches come from :class:`anatomix.data.datasets.LandmarkDataset`: the landmark terms of
    :func:`~anatomix.graphs.loss.hybrid_loss` use the cases that have landmarks, the mask term
    :func:`~anatomix.graphs.loss.boundary_loss` every structure that has a mask; a structure
    that a case does not label contributes nothing.

    Attributes:
        config: the model's :class:`anatomix.graphs.model.GraphConfig`.
        kl_weight: final weight of the KL term.
        kl_warmup_epochs: the KL weight ramps linearly from 0 over these epochs.
        mask_weight: weight of the mask (boundary Chamfer) term; 0 trains on landmarks only.
    """

    config: Any
    kl_weight: float = 1e-6
    kl_warmup_epochs: int = 20
    mask_weight: float = 1.0

    def build_model(self) -> torch.nn.Module:
        from anatomix.graphs.model import HybridGNet

        return HybridGNet(self.config)

    def loss(self, model, batch, epoch: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        from anatomix.graphs.loss import boundary_loss, hybrid_loss

        ramp = min(1.0, (epoch + 1) / max(1, self.kl_warmup_epochs))
        out = model(batch["image"])
        loss, parts = hybrid_loss(out, batch["landmarks"], self.kl_weight * ramp,
                                  has_landmarks=batch["has_landmarks"])
        if self.mask_weight:
            chamfer = boundary_loss(out, batch["boundary"], batch["has_boundary"])
            loss = loss + self.mask_weight * chamfer
            parts["boundary"] = chamfer.item()
        return loss, {"loss": loss.item(), **parts}

    def validate(self, model, loader) -> Dict[str, float]:
        """Dice per source and structure in the model frame (against the case's mask, or its
        rasterised landmarks where it has no mask), and the landmark error (model-frame px)
        of the cases with landmarks; ``score`` weighs every source the same."""
        from anatomix.evaluation import per_source_scores
        from anatomix.training import model_device

        data = loader.dataset
        template = TEMPLATES.get(self.config.template)
        size = self.config.image_size
        errors, dices = [], {}
        for batch in loader:
            pred = model(batch["image"].to(model_device(model))).landmarks.cpu().numpy() * size
            true = batch["landmarks"].numpy() * size
            for p, t, has_lm, i in zip(pred, true, batch["has_landmarks"].tolist(), batch["index"].tolist()):
                if has_lm:
                    errors.append(np.linalg.norm(p - t, axis=-1).mean())
                for key, sl in template.slices().items():
                    ref = data.model_masks[i].get(key) if data.model_masks else None
                    if ref is None and has_lm:
                        ref = rasterize(t[sl], (size, size))
                    if ref is not None:
                        dices.setdefault((data.cases[i].source, key), []).append(
                            dice(rasterize(p[sl], (size, size)), ref))
        metrics = per_source_scores(dices)
        if errors:
            metrics["landmark_px"] = float(np.mean(errors))
        return metrics

    def checkpoint_extra(self) -> Dict[str, Any]:
        return {"family": "graph", "graph_config": self.config.to_dict()}
