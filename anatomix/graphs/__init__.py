"""HybridGNet: conv VAE encoder + Chebyshev graph decoder with image-to-graph skip connections.

- :mod:`anatomix.graphs.pooling`: the template's graph pyramid (ring graphs, pooling matrices);
- :mod:`anatomix.graphs.model`: :class:`GraphConfig`, :class:`HybridGNet`, :class:`GraphOutput`;
- :mod:`anatomix.graphs.loss`: :func:`hybrid_loss`, :func:`targets_for_levels`.

The names below are imported lazily, so ``import anatomix.graphs`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "GraphConfig": "model", "GraphOutput": "model", "HybridGNet": "model",
    "hybrid_loss": "loss", "targets_for_levels": "loss",
    "GraphPyramid": "pooling", "pyramid": "pooling",
}
__all__ = ["GraphConfig", "GraphOutput", "GraphPyramid", "HybridGNet", "hybrid_loss", "pyramid", "targets_for_levels"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
