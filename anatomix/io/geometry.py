"""Crop + pad-to-square + resize into a model frame, and its exact inverse.

Frames:
    original frame: pixel coordinates of the radiograph as read, (x=column, y=row), with the
        image's top-left corner at (0, 0) and pixel (r, c) covering [c, c+1) x [r, r+1).
    model frame: the same after cropping to an integer box (the exposed field; the whole image
        by default), padding the crop to a centred square of side ``max(h, w)`` and scaling to
        ``size x size``. A point maps as ``p_model = (p_orig - (left, top) + pad) * scale``.

The mapping is affine, so landmarks go back exactly (to float rounding); masks go back by
sampling the model-frame mask at the centre of every original pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SquareFrame:
    """The crop + pad-to-square + resize mapping of one image.

    Attributes:
        height, width: original image shape.
        size: side of the square model frame.
        box: ``(top, left, bottom, right)`` crop in original pixels (bottom/right exclusive);
            ``None`` keeps the whole image. Original pixels outside the box map back as
            background (0) in :meth:`map_to_original`.
    """

    height: int
    width: int
    size: int
    box: Optional[Tuple[int, int, int, int]] = None

    def __post_init__(self) -> None:
        if self.box is not None:
            top, left, bottom, right = (int(v) for v in self.box)
            if not (0 <= top < bottom <= self.height and 0 <= left < right <= self.width):
                raise ValueError(f"crop box {self.box} outside a {self.height}x{self.width} image")
            object.__setattr__(self, "box", (top, left, bottom, right))

    @property
    def crop(self) -> Tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of the kept region (the whole image without a box)."""
        return self.box if self.box is not None else (0, 0, self.height, self.width)

    @property
    def crop_shape(self) -> Tuple[int, int]:
        """(h, w) of the kept region."""
        top, left, bottom, right = self.crop
        return bottom - top, right - left

    @property
    def side(self) -> int:
        """Side of the padded square in original pixels."""
        return max(self.crop_shape)

    @property
    def scale(self) -> float:
        """Model pixels per original pixel."""
        return self.size / self.side

    @property
    def pad(self) -> Tuple[float, float]:
        """(pad_x, pad_y): offset of the kept region inside the padded square (original px)."""
        h, w = self.crop_shape
        return ((self.side - w) / 2.0, (self.side - h) / 2.0)

    @property
    def shift(self) -> np.ndarray:
        """(x, y) to add to an original-frame point to place it in the padded square."""
        top, left = self.crop[:2]
        return np.array(self.pad) - np.array([left, top], dtype=np.float64)

    # -- points ---------------------------------------------------------------------------
    def points_to_model(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) (x, y) points from the original frame to the model frame."""
        return (np.asarray(xy, dtype=np.float64) + self.shift) * self.scale

    def points_to_original(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) (x, y) points from the model frame to the original frame."""
        return np.asarray(xy, dtype=np.float64) / self.scale - self.shift

    # -- images ---------------------------------------------------------------------------
    def image_to_model(self, pixels: np.ndarray) -> np.ndarray:
        """Resample a (H, W) image into the (size, size) model frame (float32).

        The image is cropped to :attr:`crop`; the padding is zero (black); downsampling is
        anti-aliased (bilinear with antialias, the area-like filter torch offers), upsampling is
        bilinear.
        """
        import torch
        import torch.nn.functional as F

        c_top, c_left, c_bottom, c_right = self.crop
        h, w = self.crop_shape
        pad_x, pad_y = self.pad
        left, top = int(np.floor(pad_x)), int(np.floor(pad_y))
        square = np.zeros((self.side, self.side), dtype=np.float32)
        square[top : top + h, left : left + w] = pixels[c_top:c_bottom, c_left:c_right]
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
        map is interpolated there (``order=1`` bilinear, ``0`` nearest). Pixels outside the crop
        box are 0. Threshold a probability map afterwards to get a mask; use
        :meth:`mask_to_original` for that.
        """
        shift_x, shift_y = self.shift
        # index coords: model index i <-> continuous i + 0.5; original likewise
        # model_cont = (orig_idx + 0.5 + shift) * scale  ->  model_idx = model_cont - 0.5
        matrix = np.array([self.scale, self.scale])
        offset = np.array([(0.5 + shift_y) * self.scale - 0.5, (0.5 + shift_x) * self.scale - 0.5])
        out = ndimage.affine_transform(
            np.asarray(model_map, dtype=np.float32), matrix, offset=offset,
            output_shape=(self.height, self.width), order=order, mode="nearest",
        )
        if self.box is not None:
            top, left, bottom, right = self.box
            kept = np.zeros_like(out)
            kept[top:bottom, left:right] = out[top:bottom, left:right]
            out = kept
        return out

    def mask_to_original(self, model_mask: np.ndarray) -> np.ndarray:
        """Bring a (size, size) binary or probability mask back as a (H, W) bool mask."""
        return self.map_to_original(np.asarray(model_mask, dtype=np.float32), order=1) >= 0.5
