"""The landmark template of chest radiograph anatomy, and contour <-> mask conversion.

Structure order follows JSRT/SCR, HybridGNet and CheXmask: right lung 44 nodes (0-43), left lung
50 (44-93), heart 26 (94-119), right clavicle 23 (120-142), left clavicle 23 (143-165). Right and
left are the patient's sides: the right lung lies on the image's left.

Coordinates are (x, y) = (column, row) in continuous pixel units of whatever frame the caller
works in; pixel (r, c) covers [c, c+1) x [r, r+1), so its centre is (c + 0.5, r + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

import numpy as np

from anatomix.registry import Registry


@dataclass(frozen=True)
class Structure:
    """One closed contour of the template.

    Attributes:
        key: short name used in files (``lungR``).
        label: CheXmask column name (``Right Lung``).
        count: number of nodes on the contour.
        orientation: sign of the shoelace area of the contour in image coordinates (y down),
            i.e. the direction in which the template walks round the structure.
        start_angle: angle in degrees (atan2(dy, dx), y down) from the centroid to node 0.
    """

    key: str
    label: str
    count: int
    orientation: int
    start_angle: float


# orientation and start angle measured on the mean of the 197 JSRT landmark sets of the data pack
STRUCTURES: Tuple[Structure, ...] = (
    Structure("lungR", "Right Lung", 44, -1, -75.6),
    Structure("lungL", "Left Lung", 50, +1, -103.5),
    Structure("heart", "Heart", 26, +1, 151.4),
    Structure("clavR", "Right Clavicle", 23, +1, -154.5),
    Structure("clavL", "Left Clavicle", 23, -1, -28.0),
)
STRUCTURE_BY_KEY: Dict[str, Structure] = {s.key: s for s in STRUCTURES}


@dataclass(frozen=True)
class Template:
    """An ordered set of structures whose nodes are concatenated into one graph."""

    structures: Tuple[Structure, ...]

    @property
    def keys(self) -> Tuple[str, ...]:
        return tuple(s.key for s in self.structures)

    @property
    def n_nodes(self) -> int:
        return sum(s.count for s in self.structures)

    def slices(self) -> Dict[str, slice]:
        """Node range of every structure: ``{"lungR": slice(0, 44), ...}``."""
        out, start = {}, 0
        for s in self.structures:
            out[s.key] = slice(start, start + s.count)
            start += s.count
        return out

    def split(self, landmarks: np.ndarray) -> Dict[str, np.ndarray]:
        """Split (n_nodes, 2) landmarks into per-structure (count, 2) arrays."""
        landmarks = np.asarray(landmarks)
        if landmarks.shape[-2] != self.n_nodes:
            raise ValueError(f"expected {self.n_nodes} nodes, got {landmarks.shape[-2]}")
        return {k: landmarks[..., sl, :] for k, sl in self.slices().items()}

    def ring_edges(self) -> np.ndarray:
        """(2, E) int64 array of directed edges: each node to both ring neighbours."""
        src, dst = [], []
        for sl in self.slices().values():
            idx = np.arange(sl.start, sl.stop)
            nxt = np.roll(idx, -1)
            src += [idx, nxt]
            dst += [nxt, idx]
        return np.stack([np.concatenate(src), np.concatenate(dst)]).astype(np.int64)

    def edge_index(self):
        """Ring adjacency as a torch_geometric ``edge_index`` (LongTensor, shape (2, E))."""
        import torch

        return torch.from_numpy(self.ring_edges())


LUNGS_HEART = Template(STRUCTURES[:3])
"""Right lung, left lung, heart: 120 nodes (the default model)."""
FULL = Template(STRUCTURES)
"""All five structures: 166 nodes."""
STRUCTURE_KEYS: Tuple[str, ...] = LUNGS_HEART.keys
"""``("lungR", "lungL", "heart")``: the structures that segmenters, QC and anomaly regions use."""
TEMPLATES: Registry[Template] = Registry("landmark template")
TEMPLATES.register("lungs_heart", LUNGS_HEART)
TEMPLATES.register("full", FULL)


# -- contour -> mask ---------------------------------------------------------------------------
def rasterize(contour: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Fill a closed polygon into a bool mask (even-odd rule, tested at pixel centres).

    Vectorised: the crossings of every row's centre line with the polygon's edges (half-open
    rule, so a vertex is counted once) are found at once; each crossing flips the parity of the
    pixels whose centre lies to its right (a cumulative sum along the row).

    Args:
        contour: (N, 2) vertices (x, y) in the frame of the mask; the closing edge is implied.
        shape: (H, W) of the mask.

    Returns:
        (H, W) bool mask, True where the pixel centre lies inside the polygon.
    """
    h, w = shape
    p = np.asarray(contour, dtype=np.float64)
    mask = np.zeros((h, w), dtype=bool)
    if len(p) < 3 or not np.all(np.isfinite(p)):
        return mask
    x0, y0 = p[:, 0], p[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    rows = np.arange(max(0, int(np.floor(y0.min()))), min(h, int(np.ceil(y0.max())) + 1))
    if rows.size == 0:
        return mask
    yc = rows[:, None] + 0.5
    crosses = (y0[None] <= yc) != (y1[None] <= yc)
    crosses &= (crosses.sum(axis=1) >= 2)[:, None]
    r_idx, e_idx = np.nonzero(crosses)
    if r_idx.size == 0:
        return mask
    xe0, xe1, ye0, ye1 = x0[e_idx], x1[e_idx], y0[e_idx], y1[e_idx]
    x = xe0 + (yc[r_idx, 0] - ye0) / (ye1 - ye0) * (xe1 - xe0)
    first = np.searchsorted(np.arange(w) + 0.5, x, side="right")  # first column whose centre > x
    lo, hi = int(first.min()), int(first.max())  # left of lo: no flip yet; from hi on: all flips
    flips = np.zeros((rows.size, hi - lo + 1), dtype=np.uint8)
    np.add.at(flips, (r_idx, first - lo), 1)
    parity = np.cumsum(flips, axis=1, dtype=np.uint8) & 1  # uint8 wraps at 256: parity kept
    mask[rows, lo:hi] = parity[:, : hi - lo].astype(bool)
    mask[rows, hi:] = parity[:, -1:].astype(bool)  # even crossing counts (closed polygons): empty
    return mask


def landmarks_to_masks(landmarks: np.ndarray, shape: Tuple[int, int],
                       template: Template = LUNGS_HEART) -> Dict[str, np.ndarray]:
    """Rasterise every structure of (n_nodes, 2) landmarks into {key: (H, W) bool mask}."""
    return {k: rasterize(c, shape) for k, c in template.split(landmarks).items()}


# -- mask -> contour ---------------------------------------------------------------------------
def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def resample_closed(contour: np.ndarray, n: int) -> np.ndarray:
    """Resample a closed (M, 2) polyline to n points equally spaced by arc length from point 0."""
    p = np.asarray(contour, dtype=np.float64)
    closed = np.vstack([p, p[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, s[-1], n, endpoint=False)
    return np.stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])], axis=1)


def signed_area(contour: np.ndarray) -> float:
    """Shoelace area of a closed (N, 2) polygon in image coordinates (sign = orientation)."""
    x, y = np.asarray(contour, dtype=np.float64).T
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def mask_to_contour(mask: np.ndarray, structure: Structure | str, n: int | None = None) -> np.ndarray:
    """Trace the largest component of a mask into a template-like contour.

    The boundary (iso-line 0.5, sub-pixel) is resampled to ``n`` nodes (default: the
    structure's node count) equally spaced by arc length, walked in the template's direction
    and starting at the boundary point whose angle from the centroid is nearest the template's
    node-0 angle. This turns mask-only data into landmark targets.

    Args:
        mask: (H, W) binary mask.
        structure: a :class:`Structure` or its key.
        n: number of nodes; defaults to ``structure.count``.

    Returns:
        (n, 2) float64 (x, y) in the mask's frame.

    Raises:
        ValueError: if the mask is empty.
    """
    from skimage.measure import find_contours

    s = STRUCTURE_BY_KEY[structure] if isinstance(structure, str) else structure
    n = n or s.count
    m = _largest_component(np.asarray(mask) > 0)
    if not m.any():
        raise ValueError(f"empty mask for {s.key}")
    padded = np.pad(m.astype(np.float32), 1)
    lines = find_contours(padded, 0.5)
    rc = max(lines, key=len)[:-1]  # closed: last point repeats the first
    xy = np.stack([rc[:, 1] - 1 + 0.5, rc[:, 0] - 1 + 0.5], axis=1)  # index -> continuous
    if np.sign(signed_area(xy)) != s.orientation:
        xy = xy[::-1]
    c = xy.mean(axis=0)
    ang = np.degrees(np.arctan2(xy[:, 1] - c[1], xy[:, 0] - c[0]))
    diff = np.abs((ang - s.start_angle + 180.0) % 360.0 - 180.0)
    xy = np.roll(xy, -int(np.argmin(diff)), axis=0)
    return resample_closed(xy, n)


def masks_to_landmarks(masks: Mapping[str, np.ndarray], template: Template = LUNGS_HEART,
                       missing: str = "raise") -> np.ndarray:
    """Trace {key: (H, W) mask} into (n_nodes, 2) CheXmask-style landmarks in template order.

    Each structure goes through :func:`mask_to_contour` (largest component, sub-pixel boundary,
    resampled to the template's node count, template direction and start).

    Args:
        masks: structure key -> binary mask, original frame.
        template: whose structures, in order.
        missing: ``"raise"``: a missing key raises KeyError, an empty mask ValueError;
            ``"nan"``: that structure's nodes are NaN (a pixel model that found no heart).
    """
    parts = []
    for s in template.structures:
        m = masks.get(s.key)
        if missing == "nan" and (m is None or not np.any(m)):
            parts.append(np.full((s.count, 2), np.nan))
        else:
            parts.append(mask_to_contour(masks[s.key], s))
    return np.concatenate(parts)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    den = a.sum() + b.sum()
    return 1.0 if den == 0 else 2.0 * float((a & b).sum()) / float(den)


def contour_self_intersects(contour: np.ndarray) -> bool:
    """True when any two non-adjacent edges of a closed (N, 2) polygon cross."""
    p = np.asarray(contour, dtype=np.float64)
    a, b = p, np.roll(p, -1, axis=0)
    n = len(p)
    d = b - a
    # pairwise segment intersection via orientation tests, (N, N)
    def cross(u, v):
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    ai, di = a[:, None], d[:, None]
    aj, dj = a[None], d[None]
    den = cross(di, dj)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = cross(aj - ai, dj) / den
        u = cross(aj - ai, di) / den
    hit = (den != 0) & (t > 0) & (t < 1) & (u > 0) & (u < 1)
    idx = np.arange(n)
    adjacent = (np.abs(idx[:, None] - idx[None]) <= 1) | (np.abs(idx[:, None] - idx[None]) == n - 1)
    return bool(np.any(hit & ~adjacent))
