"""The networks of anatomix models in the form that leaves the package (MONAI Bundle, ONNX).

Every exported network takes the model input that :func:`anatomix.data.preprocess.to_model_frame`
(segmenters) or :func:`anatomix.anomaly.detector.preprocess` (detectors) makes: ``image``
``(B, 1, S, S)`` float32 in [0, 1]. What each returns:

- :class:`GraphNet` (graph family): ``landmarks`` ``(B, N, 2)``, node (x, y) positions
  normalised to the model frame (multiply by ``S`` for model-frame pixels; pixel column ``c``
  spans ``[c / S, (c + 1) / S)``), the latent mean as decoded in evaluation mode: the model's own
  forward, whose Chebyshev graph convolutions are products with dense scaled Laplacians
  (:class:`anatomix.graphs.model.FixedGraphChebConv`), so the ONNX exporter sees only matrix
  products.
- :func:`pixel_network` (pixel family): ``logits`` ``(B, C, S, S)``; ``sigmoid`` gives each
  structure's probability (multi-label), thresholded at the model's ``threshold``.
- :class:`AnomalyNet` (anomaly detectors): ``residual`` ``(B, 1, S, S)``, the reconstruction
  residual map of the detector's residual kind, and, with a critic, ``critic_logits``
  ``(B, 1, S/4 - 1, S/4 - 1)`` (the critic's mean patch logits); smoothing, normalisation and
  region scores stay in :class:`~anatomix.anomaly.detector.Detector`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn


class GraphNet(nn.Module):
    """HybridGNet in evaluation mode (see the module docstring).

    Args:
        graph_config: :meth:`anatomix.graphs.model.GraphConfig.to_dict` of the model.
        dense: accepted and ignored: bundles exported while the model's graph convolutions had
            a sparse and a dense form name it in their ``inference.json``.

    Its ``state_dict`` is ``net.`` + the HybridGNet's.

    Shapes:
        image: (B, 1, S, S) -> landmarks (B, N, 2), normalised (x, y)
    """

    def __init__(self, graph_config: Mapping[str, Any], dense: bool = True) -> None:
        super().__init__()
        from anatomix.graphs.model import GraphConfig, HybridGNet

        self.net = HybridGNet(GraphConfig.from_dict(dict(graph_config))).eval()

    @property
    def cfg(self):
        return self.net.cfg

    def train(self, mode: bool = True):  # always evaluation: the exported model decodes the mean
        return super().train(False)

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(mu, logvar, the encoder maps the skips sample, finest level first)."""
        mu, logvar, maps = self.net.encoder(image)
        return mu, logvar, self.net._skip_maps(maps)

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image).landmarks

    def decode(self, z: Tensor, skip_maps: list[Tensor]) -> Tensor:
        """Normalised node positions (B, N, 2) of latents ``z`` (B, latent_dim)."""
        return self.net.decoder(z, skip_maps)[0]


class GraphWithLatent(nn.Module):
    """ONNX form of :class:`GraphNet`: also returns what latent sampling needs.

    Shapes:
        image: (B, 1, S, S) -> landmarks (B, N, 2), mu (B, D), logvar (B, D), skip_i (B, C_i, H_i, W_i)
    """

    def __init__(self, net: GraphNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor):
        mu, logvar, skip_maps = self.net.encode(image)
        return (self.net.decode(mu, skip_maps), mu, logvar, *skip_maps)


class GraphLatentDecoder(nn.Module):
    """ONNX form of the graph decoder alone, for latent sampling: (z, skip maps) -> landmarks.

    Shapes:
        z: (B, D), skip_i: (B, C_i, H_i, W_i) -> landmarks (B, N, 2)
    """

    def __init__(self, net: GraphNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: Tensor, *skip_maps: Tensor) -> Tensor:
        return self.net.decode(z, list(skip_maps))


def pixel_network(pixel_config: Mapping[str, Any]) -> nn.Module:
    """The pixel model's network (``logits``), built from its saved config (for bundle configs)."""
    from anatomix.pixel.models import PixelConfig

    return PixelConfig.from_dict(dict(pixel_config)).build()


class _DetectorNetworks(nn.Module):
    """A detector's reconstruction model and optional critic, always in eval mode."""

    def __init__(self, method: str, model_config: Mapping[str, Any],
                 critic_config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        from anatomix.anomaly.models import create_model

        self.model = create_model(method, **dict(model_config)).eval()
        self.critic = None
        if critic_config is not None:
            from anatomix.anomaly.critic import PatchCritic

            self.critic = PatchCritic(**dict(critic_config)).eval()

    def train(self, mode: bool = True):
        return super().train(False)


class AnomalyNet(_DetectorNetworks):
    """A detector's reconstruction model (and critic): image -> residual map (, critic logits).

    Args:
        method: the detector's method (``ae``, ``memae``, ``mae``, ``squid``).
        model_config: its model config.
        residual: the residual part of the detector's ``scoring.residual`` (``ssim`` for
            ``ssim+critic``), computed by the model's own ``anomaly_map``.
        critic_config: the critic's config, or None.

    Shapes:
        image: (B, 1, S, S) -> residual (B, 1, S, S)[, critic_logits (B, 1, S/4 - 1, S/4 - 1)]
    """

    def __init__(self, method: str, model_config: Mapping[str, Any], residual: str,
                 critic_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(method, model_config, critic_config)
        self.residual = residual

    def forward(self, image: Tensor):
        residual = self.model.anomaly_map(image, self.residual)
        if self.critic is None:
            return residual
        return residual, self.critic(image)


class AnomalyMapNet(_DetectorNetworks):
    """MONAI Bundle form of a detector's networks: image -> its unsmoothed part maps, stacked.

    Channel ``i`` is part ``i`` of the detector's ``scoring.residual`` (``ssim+critic``: the SSIM
    residual, then the critic's un-realness map), each computed exactly as
    :meth:`~anatomix.anomaly.detector.Detector.model_maps` computes it before smoothing; the
    rest of the score (smoothing, z-scored sum, regions, calibration) is
    :meth:`~anatomix.anomaly.detector.Detector.maps_from_parts` in the bundle's postprocessing.

    Shapes:
        image: (B, 1, S, S) -> (B, P, S, S)
    """

    def __init__(self, method: str, model_config: Mapping[str, Any], parts: list[str],
                 critic_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(method, model_config, critic_config)
        self.parts = list(parts)

    def forward(self, image: Tensor) -> Tensor:
        from anatomix.anomaly.critic import critic_map

        maps = [critic_map(self.critic, image) if p == "critic" else self.model.anomaly_map(image, p)
                for p in self.parts]
        return torch.cat(maps, dim=1)
