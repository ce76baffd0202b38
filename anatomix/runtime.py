"""Process-wide runtime settings: the known, harmless warnings of our dependencies."""

from __future__ import annotations

import logging
import warnings


def quiet_imports() -> None:
    """Filter the known noisy messages of our dependencies, nothing broader.

    - torch_geometric warns that ``torch.jit.script`` is deprecated;
    - MONAI's ``LoadImage`` logs nvImageCodec warnings when pydicom is present;
    - MONAI's ``BendingEnergyLoss`` triggers torch's list-indexing deprecation warning;
    - MONAI's ``Warp`` notes that it uses torch's native ``grid_sample``;
    - MONAI's ``compute_hausdorff_distance`` calls ``get_mask_edges`` with a deprecated argument.
    """
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated.*")
    # MONAI's BendingEnergyLoss (used by QC registration) indexes with a list: torch warns once
    warnings.filterwarnings("ignore", message=r"Using a non-tuple sequence for multidimensional indexing",
                            module=r"monai\.losses\.deform")
    # MONAI's Hausdorff distance passes an argument that MONAI itself deprecated
    warnings.filterwarnings("ignore", message=r".*get_mask_edges:always_return_as_numpy")
    # MONAI's Warp says once that it falls back to torch's grid_sample (no compiled extension)
    warnings.filterwarnings("ignore", message=r"monai\.networks\.blocks\.Warp: Using PyTorch native grid_sample")
    logging.getLogger("monai").addFilter(lambda r: "nvImageCodec" not in r.getMessage())


def resolve_device(name: str | None = None):
    """``"auto"``/None -> cuda when available else cpu; otherwise ``torch.device(name)``."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
