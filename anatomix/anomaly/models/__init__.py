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
MODELS.register("simsid", "anatomix.anomaly.models.simsid:SimSID")
MODELS.register("rd", "anatomix.anomaly.models.rd:ReverseDistillation")

#: the method names, in registration order (``anatomix anomaly fit --method``)
METHODS: tuple[str, ...] = MODELS.names()

#: defaults used by ``anatomix anomaly fit`` when no override is given
DEFAULT_IMAGE_SIZE = {"ae": 64, "memae": 64, "mae": 64, "squid": 64, "simsid": 128, "rd": 128}

#: fit settings of ``anatomix anomaly fit`` (:func:`fit_defaults`): the reconstruction methods'
#: (score = SSIM residual + realness critic, chosen on the pediatric validation set) ...
_FIT_DEFAULTS = {"epochs": 40, "lr": 1e-3, "residual": "ssim+critic", "reduce": "mean", "smooth": 1.0,
                 "select": False}
#: ... and the feature-distillation ones: the students' own map, mean of its top 5 %, smoothed
#: like the reverse-distillation paper's maps (sigma 4 px at 256 px -> 2 px at 128 px), the
#: epoch kept by normal-only selection (:mod:`anatomix.anomaly.selection`)
_FIT_OVERRIDES = {"rd": {"epochs": 30, "lr": 2e-3, "residual": "auto", "reduce": "topk", "smooth": 2.0,
                         "select": True}}


def fit_defaults(method: str) -> dict[str, Any]:
    """``epochs``, ``lr``, ``residual``, ``reduce``, ``smooth`` and ``select`` (model selection on
    held-out normals) that ``anatomix anomaly fit --method METHOD`` uses when not given."""
    model_class(method)
    return {**_FIT_DEFAULTS, **_FIT_OVERRIDES.get(method, {})}


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


__all__ = ["DEFAULT_IMAGE_SIZE", "METHODS", "MODELS", "create_model", "fit_defaults", "model_class"]
