"""Augmentations that move landmarks together with the image (MONAI transforms).

The spatial part is MONAI's :class:`monai.transforms.Affine` with random rotation, scale and
translation; the matrix it reports (output index -> input index, in (row, col) index
coordinates whose integers are pixel centres) is inverted to carry the landmarks along.
The intensity part is MONAI's random gamma/contrast, intensity scale/shift and Gaussian noise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Tuple

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation (all sampled uniformly).

    Attributes:
        rotate_deg: maximum absolute rotation in degrees.
        scale: maximum relative zoom change (0.1 -> zoom in [0.9, 1.1]).
        translate: maximum shift as a fraction of the image side.
        gamma: gamma range for the contrast adjustment.
        noise_std: maximum standard deviation of additive Gaussian noise.
        p_intensity: probability of each intensity transform.
        p_border: probability of a strong zoom-out pushed towards one corner, which leaves wide
            black bands on up to two sides (films padded or collimated at other sites).
        border_zoom: (min, max) shrink factor of that zoom-out (1.5 -> the image fills 2/3).
        p_blur: probability of a Gaussian blur (sigma 0.5-1.5 model pixels).
        p_invert: probability of inverted contrast (1 - image).

    The last four default to 0, i.e. the original JSRT recipe; :meth:`sites` is the recipe for
    training on several collections.
    """

    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.06
    gamma: Tuple[float, float] = (0.6, 1.6)
    noise_std: float = 0.03
    p_intensity: float = 0.5
    p_border: float = 0.0
    border_zoom: Tuple[float, float] = (1.15, 1.6)
    p_blur: float = 0.0
    p_invert: float = 0.0

    @classmethod
    def sites(cls) -> "AugmentConfig":
        """Augmentation that looks like other hospitals' films: more tilt and zoom, wide
        borders, blur, stronger noise, occasional inverted contrast."""
        return cls(rotate_deg=15.0, scale=0.15, translate=0.08, gamma=(0.5, 2.0), noise_std=0.05,
                   p_border=0.15, p_blur=0.2, p_invert=0.05)

    def scaled(self, strength: float) -> "AugmentConfig":
        """The same recipe with the spatial ranges multiplied by ``strength`` (0 = no spatial
        change); a light final phase of training uses e.g. 0.5."""
        return replace(self, rotate_deg=self.rotate_deg * strength, scale=self.scale * strength,
                       translate=self.translate * strength)


class LandmarkAugment:
    """Random spatial + intensity augmentation of a (S, S) image and its (N, 2) landmarks.

    Landmarks are (x, y) in the image's frame (pixel (r, c) covers [c, c+1) x [r, r+1)).
    """

    def __init__(self, config: AugmentConfig = AugmentConfig(), seed: int | None = None):
        from monai.transforms import (
            Compose,
            RandAdjustContrast,
            RandGaussianNoise,
            RandGaussianSmooth,
            RandScaleIntensity,
            RandShiftIntensity,
        )

        self.config = config
        self.rng = np.random.default_rng(seed)
        p = config.p_intensity
        self.intensity = Compose([
            RandAdjustContrast(prob=p, gamma=config.gamma),
            RandScaleIntensity(factors=0.15, prob=p),
            RandShiftIntensity(offsets=0.08, prob=p),
            RandGaussianNoise(prob=p, std=config.noise_std),
        ] + ([RandGaussianSmooth(sigma_x=(0.5, 1.5), sigma_y=(0.5, 1.5), prob=config.p_blur)]
             if config.p_blur > 0 else []))
        if seed is not None:
            self.intensity.set_random_state(seed=seed)

    def __call__(self, image: np.ndarray, landmarks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Augment one pair.

        Args:
            image: (S, S) float32.
            landmarks: (N, 2) (x, y) in the image frame.

        Returns:
            (image (S, S) float32 clipped to [0, 1], landmarks (N, 2) float32).
        """
        out, matrix = self.random_affine(image.shape[0])(image[None].astype(np.float32))
        moved = move_points(landmarks, np.asarray(matrix, dtype=np.float64))
        return self.intensity_of(out), moved.astype(np.float32)

    def random_affine(self, size: int):
        """A MONAI ``Affine`` with a fresh random rotation, zoom and shift for (size, size) images;
        called with ``image_only=False`` it also returns its resampling matrix."""
        from monai.transforms import Affine

        c, rng = self.config, self.rng
        zoom = 1.0 + rng.uniform(-c.scale, c.scale)
        shift = rng.uniform(-c.translate, c.translate, 2) * size
        if c.p_border > 0 and rng.uniform() < c.p_border:
            # MONAI's scale > 1 shrinks the image; shifting by up to the freed margin puts the
            # whole band on one side per axis
            zoom = rng.uniform(*c.border_zoom)
            shift = rng.choice([-1.0, 1.0], 2) * rng.uniform(0.0, 1.0, 2) * (zoom - 1.0) / 2.0 * size
        return Affine(
            rotate_params=float(np.deg2rad(rng.uniform(-c.rotate_deg, c.rotate_deg))),
            scale_params=(zoom, zoom),
            translate_params=tuple(shift),
            padding_mode="zeros", mode="bilinear", image_only=False,
        )

    def intensity_of(self, image) -> np.ndarray:
        """Random intensity transforms of a (1, S, S) image -> (S, S) float32 in [0, 1]."""
        out = np.clip(np.asarray(self.intensity(image), dtype=np.float32)[0], 0.0, 1.0)
        if self.config.p_invert > 0 and self.rng.uniform() < self.config.p_invert:
            out = 1.0 - out
        return out


def move_points(xy: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Carry (N, 2) (x, y) points through a MONAI resampling matrix.

    Args:
        xy: points in the input image's frame.
        matrix: (3, 3) homogeneous matrix mapping output (row, col) indices to input indices.

    Returns:
        (N, 2) points in the output image's frame.
    """
    idx = np.stack([xy[:, 1] - 0.5, xy[:, 0] - 0.5, np.ones(len(xy))])  # (row, col, 1) x N
    out = np.linalg.solve(matrix, idx)
    return np.stack([out[1] + 0.5, out[0] + 0.5], axis=1)


class MaskAugment(LandmarkAugment):
    """The same random augmentation for a (S, S) image and its (C, S, S) mask channels.

    The spatial part is one MONAI :class:`~monai.transforms.Affine` applied to the image and
    the masks stacked together (bilinear), so they move identically; the masks are then
    thresholded at 0.5 (bilinear + threshold keeps boundaries smoother than nearest).
    The intensity part touches the image only.
    """

    def __call__(self, image: np.ndarray, masks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        """Augment one pair.

        Args:
            image: (S, S) float32.
            masks: (C, S, S) binary (any dtype).

        Returns:
            (image (S, S) float32 clipped to [0, 1], masks (C, S, S) float32 0/1).
        """
        stack = np.concatenate([image[None], np.asarray(masks, np.float32)], axis=0).astype(np.float32)
        out = np.asarray(self.random_affine(image.shape[0])(stack)[0], dtype=np.float32)
        return self.intensity_of(out[:1]), (out[1:] >= 0.5).astype(np.float32)
