"""Mask post-processing: keep the largest component of each structure and fill its holes.

Works on one structure at a time (multi-label masks: channels may overlap). The raw masks are
never modified in place; callers keep them when they want both.
"""

from __future__ import annotations

from typing import Dict, Mapping

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray) -> np.ndarray:
    """(H, W) binary -> bool mask of its largest 8-connected component (empty stays empty)."""
    m = np.asarray(mask, bool)
    lab, n = ndimage.label(m, structure=np.ones((3, 3), bool))
    if n <= 1:
        return m.copy()
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (1 + int(np.argmax(sizes)))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(H, W) binary -> bool mask with every background region not connected to the border
    (4-connectivity) filled."""
    return ndimage.binary_fill_holes(np.asarray(mask, bool))


def clean_mask(mask: np.ndarray, keep_largest: bool = True, fill: bool = True) -> np.ndarray:
    """Largest component, then hole filling, of one (H, W) mask (a new bool array)."""
    m = np.asarray(mask, bool)
    if keep_largest:
        m = largest_component(m)
    if fill:
        m = fill_holes(m)
    return m


def postprocess_masks(masks: Mapping[str, np.ndarray], keep_largest: bool = True,
                      fill: bool = True) -> Dict[str, np.ndarray]:
    """:func:`clean_mask` on every structure of {key: (H, W) mask}; the input is left as is."""
    return {k: clean_mask(v, keep_largest, fill) for k, v in masks.items()}


def topology(mask: np.ndarray) -> Dict[str, int]:
    """Topology of one (H, W) mask: ``components`` (8-connected) and ``holes`` (4-connected
    background regions not touching the border)."""
    m = np.asarray(mask, bool)
    n_comp = ndimage.label(m, structure=np.ones((3, 3), bool))[1]
    n_bg = ndimage.label(np.pad(~m, 1, constant_values=True))[1]
    return {"components": int(n_comp), "holes": int(max(0, n_bg - 1))}


def topological_error(mask: np.ndarray) -> bool:
    """True when a structure has more than one component or a hole (an empty mask counts
    as an error too: the structure is missing)."""
    t = topology(mask)
    return t["components"] != 1 or t["holes"] > 0
