"""Registry of bundled models: name -> kind, builder, weights file and model card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelEntry:
    """A bundled model.

    Attributes:
        name: registry name (``graph``, ``pixel``, ``anomaly``...).
        kind: ``graph`` | ``pixel`` | ``anomaly`` | ``qc``.
        filename: checkpoint file inside ``anatomix/weights``.
        summary: one line for ``anatomix info``.
    """

    name: str
    kind: str
    filename: str
    summary: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename

    @property
    def card(self) -> Path:
        return self.path.with_suffix(".md")

    @property
    def available(self) -> bool:
        return self.path.is_file()


REGISTRY: Dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    REGISTRY[entry.name] = entry
    return entry


register(ModelEntry("graph", "graph", "hybridgnet_lungs_heart.pt",
                    "HybridGNet lungs+heart landmark contours (JSRT/SCR, research use)"))
register(ModelEntry("qc_atlases", "qc", "qc_atlases.npz",
                    "RCA reference atlases for mask QC: 11 cluster-mean images (JSRT/SCR, research use)"))
register(ModelEntry("pixel", "pixel", "pixel_unet_lungs_heart.pt",
                    "MONAI UNet lungs+heart dense masks, landmarks traced (JSRT/SCR, research use)"))
register(ModelEntry("anomaly", "anomaly", "anomaly_pediatric.pt",
                    "Normal-only anomaly detector (conv AE + realness critic, 64 px), ZhangLab pediatric "
                    "normals, CC BY 4.0"))


def list_models() -> List[ModelEntry]:
    return list(REGISTRY.values())


def resolve(name_or_path: str) -> Path:
    """A registry name or a checkpoint path -> checkpoint path (clear error listing names)."""
    from anatomix.errors import AnatomixError

    if name_or_path in REGISTRY:
        entry = REGISTRY[name_or_path]
        if not entry.available:
            raise AnatomixError(f"bundled model {name_or_path!r} has no weights at {entry.path}")
        return entry.path
    p = Path(name_or_path)
    if p.is_file():
        return p
    raise AnatomixError(f"unknown model {name_or_path!r}: not a file and not one of {sorted(REGISTRY)}")
