"""Shared fixtures. Data-dependent tests skip with a reason when ../shared/data is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# one torch/OpenMP thread per test process (set before torch is imported): oversubscribed
# threads are 10-50x slower on a loaded machine, and no result depends on it
os.environ.setdefault("OMP_NUM_THREADS", "1")

DATA_ROOT = Path(os.environ.get("ANATOMIX_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real CXR data pack (../shared/data); skips the test when it is not there."""
    if not (DATA_ROOT / "cxr-seg" / "manifest.csv").is_file():
        pytest.skip(f"data pack not found at {DATA_ROOT} (set ANATOMIX_DATA to point at it)")
    return DATA_ROOT
