"""Pad-to-square + resize into a model frame, and its exact inverse.

Frames:
    original frame: pixel coordinates of the radiograph as read, (x=column, y=row), with the
        image's top-left corner at (0, 0) and pixel (r, c) covering [c, c+1) x [r, r+1).
    model frame: the same after padding to a centred square of side ``max(H, W)`` and scaling
        to ``size x size``. A point maps as ``p_model = (p_orig + pad) * scale``.

The mapping is affine, so landmarks go back exactly (to float rounding); masks go back by
sampling the model-frame mask at the centre of every original pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SquareFrame:
    """The pad-to-square + resize mapping of one image.

    Attributes:
        height, width: original image shape.
        size: side of the square model frame.
    """

    height: int
    width: int
    size: int

    @property
    def side(self) -> int:
        """Side of the padded square in original pixels."""
        return max(self.height, self.width)

    @property
    def scale(self) -> float:
        """Model pixels per original pixel."""
        return self.size / self.side

    @property
    def pad(self) -> Tuple[float, float]:
        """(pad_x, pad_y): original-frame offset of the image inside the padded square."""
        return ((self.side - self.width) / 2.0, (self.side - self.height) / 2.0)

    # -- points ---------------------------------------------------------------------------
    def points_to_model(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) (x, y) points from the original frame to the model frame."""
        return (np.asarray(xy, dtype=np.float64) + np.array(self.pad)) * self.scale

    def points_to_original(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) (x, y) points from the model frame to the original frame."""
        return np.asarray(xy, dtype=np.float64) / self.scale - np.array(self.pad)

    # -- images ---------------------------------------------------------------------------
    def image_to_model(self, pixels: np.ndarray) -> np.ndarray:
        """Resample a (H, W) image into the (size, size) model frame (float32).

        The padding is zero (black); downsampling is anti-aliased (bilinear with antialias,
        the area-like filter torch offers), upsampling is bilinear.
        """
        import torch
        import torch.nn.functional as F

        pad_x, pad_y = self.pad
        left, top = int(np.floor(pad_x)), int(np.floor(pad_y))
        square = np.zeros((self.side, self.side), dtype=np.float32)
        square[top : top + self.height, left : left + self.width] = pixels
        if (left, top) != (pad_x, pad_y):
            # odd padding: shift by the remaining half pixel so the mapping stays exact;
            # grid-constant interpolates the edge pixel against the zero padding (symmetric pads)
            square = ndimage.shift(square, (pad_y - top, pad_x - left), order=1, mode="grid-constant")
        t = torch.from_numpy(square)[None, None]
        out = F.interpolate(t, size=(self.size, self.size), mode="bilinear",
                            align_corners=False, antialias=True)
        return out[0, 0].numpy()

    def map_to_original(self, model_map: np.ndarray, order: int = 1) -> np.ndarray:
        """Resample a (size, size) model-frame map to the (H, W) original frame.

        Every original pixel centre (c + 0.5, r + 0.5) is mapped into the model frame and the
        map is interpolated there (``order=1`` bilinear, ``0`` nearest). Threshold a
        probability map afterwards to get a mask; use :meth:`mask_to_original` for that.
        """
        pad_x, pad_y = self.pad
        # index coords: model index i <-> continuous i + 0.5; original likewise
        # model_cont = (orig_idx + 0.5 + pad) * scale  ->  model_idx = model_cont - 0.5
        matrix = np.array([self.scale, self.scale])
        offset = np.array([(0.5 + pad_y) * self.scale - 0.5, (0.5 + pad_x) * self.scale - 0.5])
        return ndimage.affine_transform(
            np.asarray(model_map, dtype=np.float32), matrix, offset=offset,
            output_shape=(self.height, self.width), order=order, mode="nearest",
        )

    def mask_to_original(self, model_mask: np.ndarray) -> np.ndarray:
        """Bring a (size, size) binary or probability mask back as a (H, W) bool mask."""
        return self.map_to_original(np.asarray(model_mask, dtype=np.float32), order=1) >= 0.5
