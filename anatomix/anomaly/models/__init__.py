"""Anomaly models, one module each, behind one registry and one factory.

>>> from anatomix.anomaly.models import create_model
>>> m = create_model("ae", image_size=64)
"""

from __future__ import annotations

from typing import Any

from anatomix.errors import UsageError
from anatomix.registry import Registry

#: method name -> model class (registered as ``"module:Class"``: listing names imports no torch)
MODELS: Registry = Registry("anomaly method")
MODELS.register("ae", "anatomix.anomaly.models.ae:ConvAE")
MODELS.register("memae", "anatomix.anomaly.models.memae:MemAE")
MODELS.register("mae", "anatomix.anomaly.models.mae:MemMCMAE")
MODELS.register("squid", "anatomix.anomaly.models.squid:SQUID")

#: the method names, in registration order (``anatomix anomaly fit --method``)
METHODS: tuple[str, ...] = MODELS.names()

#: defaults used by ``anatomix anomaly fit`` when no override is given
DEFAULT_IMAGE_SIZE = {"ae": 64, "memae": 64, "mae": 64, "squid": 64}


def model_class(method: str):
    """The class behind a method name.

    Raises:
        UsageError: unknown method; the message lists the valid names.
    """
    return MODELS.get(method)


def create_model(method: str, **config: Any):
    """Build a model by name from its config (the constructor's keyword arguments).

    Raises:
        UsageError: unknown method, or a config the constructor refuses (unknown keyword, bad value).
    """
    cls = model_class(method)
    try:
        return cls(**config)
    except (TypeError, ValueError) as e:  # an unknown keyword or a bad value: the config is the user's
        raise UsageError(str(e)) from e


__all__ = ["DEFAULT_IMAGE_SIZE", "METHODS", "MODELS", "create_model", "model_class"]
