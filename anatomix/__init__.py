"""anatomix: chest X-ray anatomy (segmentation, mask QC, normal-only anomaly screening).

Importing the package is cheap: torch, MONAI and torch_geometric are imported by the
modules that need them, never here.
"""

__version__ = "0.1.0"

from anatomix.errors import AnatomixError, ReadError  # noqa: E402

__all__ = ["AnatomixError", "ReadError", "__version__"]
