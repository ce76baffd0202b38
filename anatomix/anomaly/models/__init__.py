"""Anomaly models, one module each, behind one factory.

>>> from anatomix.anomaly.models import create_model
>>> m = create_model("ae", image_size=64)
"""

from __future__ import annotations

import importlib
from typing import Any

#: method name -> "module:Class"
MODELS: dict[str, str] = {
    "ae": "anatomix.anomaly.models.ae:ConvAE",
    "memae": "anatomix.anomaly.models.memae:MemAE",
    "mae": "anatomix.anomaly.models.mae:MemMCMAE",
    "squid": "anatomix.anomaly.models.squid:SQUID",
}

#: defaults used by ``anatomix anomaly fit`` when no override is given
DEFAULT_IMAGE_SIZE = {"ae": 64, "memae": 64, "mae": 64, "squid": 64}


def model_class(method: str):
    """The class behind a method name (clear error listing the valid names)."""
    if method not in MODELS:
        raise ValueError(f"unknown anomaly method {method!r}; choose one of {sorted(MODELS)}")
    mod, cls = MODELS[method].split(":")
    return getattr(importlib.import_module(mod), cls)


def create_model(method: str, **config: Any):
    """Build a model by name from its config (the constructor's keyword arguments)."""
    return model_class(method)(**config)


__all__ = ["DEFAULT_IMAGE_SIZE", "MODELS", "create_model", "model_class"]
