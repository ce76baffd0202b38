"""Read any radiograph file into one :class:`~anatomix.io.record.Radiograph`.

Formats (chosen by suffix, case-insensitive; see :data:`SUPPORTED_SUFFIXES`):

- PNG, JPEG, TIFF through Pillow: 8/16-bit grayscale, RGB(A), palette (converted through the
  palette), ``"1"``, ``"I;16"``, ``"I"``, ``"F"``. Colour becomes luminance (ITU-R 601-2 weights,
  as Pillow's ``convert("L")``); alpha is ignored.
- DICOM (``.dcm``, ``.dicom``, and any other file with the ``DICM`` marker after its 128-byte
  preamble) through pydicom: Modality LUT / rescale, then VOI LUT or window, then MONOCHROME1
  inverted so that lungs are dark. ``PixelSpacing`` (else ``ImagerPixelSpacing``) -> spacing.
- NIfTI (``.nii``, ``.nii.gz``) through nibabel: 2D, or 3D with one singleton axis; oriented by
  the affine as described in :func:`nifti_to_display`.
- NumPy ``.npy``: (H, W), 3D with a singleton axis, or (H, W, 3|4) channel-last colour.

Intensity becomes float32 in [0, 1]:

- integer images of known bit depth are divided by the top of their range: ``"1"`` and bool by 1,
  8-bit by 255, 16-bit by 65535, or by ``2**bits - 1`` when the file says fewer bits are used
  (a PNG ``sBIT`` chunk, DICOM ``BitsStored``); ``.npy`` and NIfTI arrays of dtype uint8/uint16
  count as 8/16-bit;
- everything else (float data, signed integers, DICOM after a LUT or window, scaled NIfTI) is
  min-max scaled over the image; a constant image becomes all zeros.

Every failure caused by the file raises :class:`~anatomix.errors.ReadError` whose message names
the file and the cause.

Resource guards: every reader checks the image size the file declares (Pillow's header, DICOM
Rows/Columns/frames/BitsAllocated, NIfTI dims, the ``.npy`` header) against ``max_pixels``
(default :data:`MAX_PIXELS`) before it allocates or decompresses anything; compressed data are
inflated no further than the declared image needs (``.nii.gz`` streams, DICOM RLE segments,
deflated DICOM data sets, JPEG-family DICOM frames through Pillow). See SECURITY.md.
"""

from __future__ import annotations

import gzip
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from anatomix.errors import ReadError, UsageError
from anatomix.io.inputs import has_dicom_marker
from anatomix.io.record import Radiograph
from anatomix.limits import BYTES_PER_PIXEL, MAX_PIXELS, METADATA_BYTES

SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ".nii", ".nii.gz", ".npy",
)
"""File suffixes that :func:`read_radiograph` accepts (plus DICOM files of any name)."""

MIN_SIDE = 16
"""Smallest accepted image side in pixels; anything smaller is not a usable radiograph."""


_KIND_BY_SUFFIX = {
    ".png": "pil", ".jpg": "pil", ".jpeg": "pil", ".tif": "pil", ".tiff": "pil",
    ".dcm": "dicom", ".dicom": "dicom", ".nii": "nifti", ".nii.gz": "nifti", ".npy": "npy",
}
_PIL_FORMATS = ("PNG", "JPEG", "TIFF")
_PIL_GRAY_BITS = {"1": 1, "L": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16}
_PIL_WIDE_MODES = {"I": 32, "I;16S": 16, "F": 32}  # no known range: min-max
_PIL_PHOTOMETRIC = {"P": "PALETTE COLOR", "PA": "PALETTE COLOR", "RGBA": "RGB", "RGBX": "RGB",
                    "LA": "MONOCHROME2", "La": "MONOCHROME2"}
_LUMA = np.array([0.299, 0.587, 0.114])
_PIL_LOCK = threading.Lock()
_RAS = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])

PathLike = str | os.PathLike


def read_radiograph(path: PathLike, max_pixels: int = MAX_PIXELS) -> Radiograph:
    """Read one radiograph file into a :class:`Radiograph` in its original frame.

    Args:
        path: a PNG, JPEG, TIFF, DICOM, NIfTI or ``.npy`` file (see the module docstring).
        max_pixels: largest image accepted (rows x columns), checked against what the file
            declares before anything is decoded (default :data:`MAX_PIXELS`).

    Returns:
        A :class:`Radiograph` whose ``pixels`` are float32 (H, W) in [0, 1], row 0 at the top,
        column 0 at the image's left (the patient's right), lungs dark. ``spacing`` is
        (row mm, column mm) for DICOM and NIfTI, else None; ``affine`` is set for NIfTI.
        ``meta`` always holds ``format``, ``dtype`` (of the stored samples), ``bit_depth``,
        ``photometric`` and ``mode`` (the Pillow mode, None for other formats).

    Raises:
        ReadError: the path is missing, a directory, a dangling link, empty, of an unsupported
            type, corrupt or truncated, not 2D (e.g. a 3D volume), smaller than
            :data:`MIN_SIDE` pixels on a side, larger than ``max_pixels`` pixels (or its
            compressed data inflate past what its size needs), or holds NaN/infinite values.
    """
    if int(max_pixels) < MIN_SIDE * MIN_SIDE:
        raise UsageError(f"max_pixels must be at least {MIN_SIDE * MIN_SIDE}, got {max_pixels}")
    p = Path(path)
    _check_file(p)
    kind = _kind(p)
    try:
        return _READERS[kind](p, int(max_pixels))
    except ReadError:
        raise
    except Exception as e:  # any library failure on a hostile file is the file's fault
        raise ReadError(p, f"cannot read as {kind}: {type(e).__name__}: {e}") from e


# -- file checks -------------------------------------------------------------------------------

def read_mask(path: PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A binary mask image (0/1 or 0/255 PNG, or any format :func:`read_radiograph` reads)
    -> (H, W) bool, True where the pixel is non-zero.

    Raises:
        ReadError: as :func:`read_radiograph`.
    """
    return read_radiograph(path, max_pixels).pixels > 0


def _check_file(p: Path) -> None:
    if not p.exists():
        cause = "dangling symlink (its target does not exist)" if p.is_symlink() else "no such file"
        raise ReadError(p, cause)
    if p.is_dir():
        raise ReadError(p, "is a directory, not an image file")
    if not p.is_file():
        raise ReadError(p, "not a regular file")
    if p.stat().st_size == 0:
        raise ReadError(p, "empty file (0 bytes)")


def _kind(p: Path) -> str:
    name = p.name.lower()
    suffix = ".nii.gz" if name.endswith(".nii.gz") else p.suffix.lower()
    if suffix in _KIND_BY_SUFFIX:
        return _KIND_BY_SUFFIX[suffix]
    if has_dicom_marker(p):
        return "dicom"
    raise ReadError(p, f"unsupported file type {suffix or '(no suffix)'!r} "
                       f"(supported: {', '.join(SUPPORTED_SUFFIXES)}, or DICOM)")


def _check_pixels(p: Path, rows: int, cols: int, max_pixels: int) -> None:
    """Refuse a declared image size over ``max_pixels`` (before anything is allocated)."""
    if rows * cols > max_pixels:
        raise ReadError(p, f"image too large: {rows}x{cols} = {rows * cols} pixels declared, over the "
                           f"limit of {max_pixels} (max_pixels / --max-pixels)")


def _check_size(p: Path, shape: Sequence[int]) -> None:
    h, w = shape
    if min(h, w) < MIN_SIDE:
        raise ReadError(p, f"image too small ({h}x{w}); at least {MIN_SIDE}x{MIN_SIDE} pixels needed")


# -- intensity ---------------------------------------------------------------------------------
def _dtype_bits(dtype: np.dtype) -> int | None:
    """Bit depth of dtypes with a known image range (bool, uint8, uint16), else None."""
    return {np.dtype(bool): 1, np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(np.dtype(dtype))


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W, C>=3) colour -> (H, W) float64 luminance in the same units."""
    return rgb[..., :3].astype(np.float64) @ _LUMA


def _normalise(data: np.ndarray, bits: int | None, invert: bool = False) -> np.ndarray:
    """Scale (H, W) samples to float32 [0, 1] by ``2**bits - 1``, or min-max when bits is None."""
    if bits is not None:
        x = np.clip(data.astype(np.float32) / np.float32(2**bits - 1), 0.0, 1.0)
    else:
        lo, hi = float(data.min()), float(data.max())
        if hi == lo:
            return np.zeros(data.shape, np.float32)
        x = ((data.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
    return (1.0 - x) if invert else x


def _finish(p: Path, data: np.ndarray, bits: int | None, meta: dict[str, Any],
            invert: bool = False, spacing: tuple[float, float] | None = None,
            affine: np.ndarray | None = None) -> Radiograph:
    """Validate (H, W) samples and wrap them, scaled to [0, 1], into a Radiograph."""
    if data.ndim != 2:
        raise ReadError(p, f"array with shape {data.shape} is not a 2D image")
    if not (data.dtype == bool or np.issubdtype(data.dtype, np.integer)
            or np.issubdtype(data.dtype, np.floating)):
        raise ReadError(p, f"unsupported sample type {data.dtype}")
    _check_size(p, data.shape)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise ReadError(p, "image contains NaN or infinite values")
    pixels = np.ascontiguousarray(_normalise(data, bits, invert))
    return Radiograph(pixels=pixels, path=p, spacing=spacing, affine=affine, meta=meta)


# -- PNG / JPEG / TIFF -------------------------------------------------------------------------
@contextmanager
def _pil_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Let Pillow open up to ``max_pixels`` pixels; restore its global limit afterwards.

    Pillow warns above ``MAX_IMAGE_PIXELS`` and raises above twice that; the warning is made an
    error here so that the limit is exactly ``max_pixels``. The lock keeps threads from
    interleaving.
    """
    from PIL import Image

    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _png_significant_bits(p: Path) -> int | None:
    """Significant bits of a grayscale PNG from its ``sBIT`` chunk, or None when absent."""
    with open(p, "rb") as f:
        f.seek(8)  # signature
        while len(head := f.read(8)) == 8:
            length, ctype = struct.unpack(">I4s", head)
            if ctype == b"sBIT":
                value = f.read(1)
                return value[0] if value and 1 <= value[0] <= 16 else None
            if ctype in (b"IDAT", b"IEND"):
                return None
            f.seek(length + 4, os.SEEK_CUR)  # data + CRC
    return None


def _pil_bits(p: Path, fmt: str, mode: str) -> int | None:
    """Bits per sample that set the intensity range of a Pillow image (None: min-max)."""
    if mode in _PIL_WIDE_MODES:
        return None
    bits = _PIL_GRAY_BITS.get(mode, 8)  # colour modes are decoded to 8-bit RGB
    if bits == 16 and fmt == "PNG":
        return _png_significant_bits(p) or 16
    return bits


def _read_pil(p: Path, max_pixels: int) -> Radiograph:
    from PIL import Image, UnidentifiedImageError

    try:
        with _pil_pixel_limit(max_pixels):
            im = Image.open(p, formats=_PIL_FORMATS)
    except UnidentifiedImageError:
        raise ReadError(p, "cannot identify image data (not a valid PNG, JPEG or TIFF file)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ReadError(p, f"image too large, over the limit of {max_pixels} pixels "
                           f"(max_pixels / --max-pixels; possible decompression bomb): {e}") from e
    with im:
        fmt, mode = im.format, im.mode
        _check_size(p, (im.height, im.width))
        try:
            im.load()  # Pillow raises on truncated data unless LOAD_TRUNCATED_IMAGES is set
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ReadError(p, f"truncated or corrupt {fmt} data ({e})") from e
        gray = mode in _PIL_GRAY_BITS or mode in _PIL_WIDE_MODES
        data = np.asarray(im) if gray else np.asarray(im.convert("RGB"))
    bits = _pil_bits(p, fmt, mode)
    meta = {"format": fmt.lower(), "dtype": str(data.dtype),
            "bit_depth": bits or _PIL_WIDE_MODES[mode],
            "photometric": "MONOCHROME2" if gray else _PIL_PHOTOMETRIC.get(mode, mode), "mode": mode}
    if not gray:
        data = _luminance(data)
    return _finish(p, data, bits, meta)



# -- DICOM -------------------------------------------------------------------------------------
def _dicom_has_lut(ds: Any) -> bool:
    """True when a Modality LUT / rescale or a VOI LUT / window changes the stored values."""
    rescaled = float(ds.get("RescaleSlope", 1) or 1) != 1 or float(ds.get("RescaleIntercept", 0) or 0) != 0
    return rescaled or any(k in ds for k in ("ModalityLUTSequence", "VOILUTSequence", "WindowCenter"))


def _dicom_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing, else None."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return float(value[0]), float(value[1])
    return None


_DICOM_BITS = (1, 8, 16, 32, 64)
_DEFLATED = "1.2.840.10008.1.2.1.99"
_CHUNK = 1 << 20


def _inflated_size(stream, cap: int, wbits: int) -> int:
    """Bytes that a zlib/deflate ``stream`` inflates to, counted in chunks and never past ``cap``
    (so at most ``_CHUNK`` bytes are held at a time): the size, or ``cap + 1`` when larger."""
    inflater, total = zlib.decompressobj(wbits), 0
    while total <= cap:
        data = inflater.unconsumed_tail or stream.read(_CHUNK)
        if not data:
            break
        total += len(inflater.decompress(data, _CHUNK))
        if inflater.eof:
            break
    return min(total, cap + 1)


def _check_deflated_dicom(p: Path, max_pixels: int) -> None:
    """A deflated DICOM data set (which pydicom inflates whole) must inflate to at most
    ``max_pixels`` x :data:`BYTES_PER_PIXEL` + :data:`METADATA_BYTES` bytes."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with open(p, "rb") as f:
        read_preamble(f, True)
        meta = _read_file_meta_info(f)
        if meta.get("TransferSyntaxUID") != _DEFLATED:
            return
        cap = max_pixels * BYTES_PER_PIXEL + METADATA_BYTES
        if _inflated_size(f, cap, -zlib.MAX_WBITS) > cap:
            raise ReadError(p, f"deflated DICOM data set inflates past {cap} bytes "
                               f"(the limit for {max_pixels} pixels; possible decompression bomb)")


def _check_dicom_declared(p: Path, ds: Any, max_pixels: int) -> None:
    """Refuse a DICOM whose declared frame (Rows, Columns, frames, BitsAllocated) is not a
    single radiograph within ``max_pixels``, before any pixel data are read."""
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ReadError(p, f"multi-frame DICOM ({ds.NumberOfFrames} frames) is not a radiograph")
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits not in _DICOM_BITS:
        raise ReadError(p, f"unsupported BitsAllocated {bits} (expected one of {_DICOM_BITS})")
    if int(ds.get("SamplesPerPixel", 1) or 1) not in (1, 3):
        raise ReadError(p, f"unsupported SamplesPerPixel {ds.SamplesPerPixel} (expected 1 or 3)")
    _check_pixels(p, int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), max_pixels)


def _rle_segment_size(segment: bytes, cap: int) -> int:
    """Decoded size of one DICOM RLE (PackBits) segment, counted from its run headers without
    decoding, and no further than just past ``cap``."""
    size = pos = 0
    while pos < len(segment) and size <= cap:
        header = segment[pos]
        if header > 128:  # replicate the next byte 257 - header times
            size, pos = size + 257 - header, pos + 2
        elif header < 128:  # copy the next header + 1 bytes
            size, pos = size + header + 1, pos + header + 2
        else:
            pos += 1
    return size


def _check_rle_frame(p: Path, ds: Any) -> None:
    """Refuse an RLE frame whose segments inflate past the declared Rows x Columns (pydicom
    decodes a whole segment before it compares sizes)."""
    from pydicom.encaps import generate_frames

    plane = int(ds.Rows) * int(ds.Columns)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    count, *offsets = struct.unpack("<16L", frame[:64].ljust(64, b"\0"))
    bounds = [*offsets[:min(count, 15)], len(frame)]
    for start, end in zip(bounds, bounds[1:]):
        if _rle_segment_size(frame[start:end], plane + 128) > plane + 128:
            raise ReadError(p, f"RLE segment inflates past the declared {ds.Rows}x{ds.Columns} frame "
                               f"(possible decompression bomb)")


def _dicom_pixels(p: Path, ds: Any, max_pixels: int) -> np.ndarray:
    """Decode the pixel data of a checked data set, inflating no more than the frame needs.

    RLE segments are measured before pydicom decodes them; JPEG-family frames decoded by
    Pillow are held to ``max_pixels`` by Pillow's own header check.
    """
    syntax = ds.file_meta.get("TransferSyntaxUID")
    try:
        if syntax is None or not syntax.is_encapsulated:
            return ds.pixel_array
        if syntax == "1.2.840.10008.1.2.5":  # RLE Lossless
            _check_rle_frame(p, ds)
            return ds.pixel_array
        with _pil_pixel_limit(max_pixels):
            return ds.pixel_array
    except ReadError:
        raise
    except Exception as e:
        name = getattr(syntax, "name", "unknown")
        raise ReadError(p, f"cannot decode pixel data of transfer syntax {name} ({syntax}): {e}") from e


def _read_dicom(p: Path, max_pixels: int) -> Radiograph:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        _check_deflated_dicom(p, max_pixels)
        ds = pydicom.dcmread(p, defer_size=_CHUNK)  # large values are read when used
    except InvalidDicomError as e:
        raise ReadError(p, f"not a DICOM file ({e})") from e
    if "PixelData" not in ds:
        raise ReadError(p, "DICOM file has no pixel data (PixelData element missing)")
    _check_dicom_declared(p, ds, max_pixels)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    arr = _dicom_pixels(p, ds, max_pixels)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    stored = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
    meta = {"format": "dicom", "dtype": str(arr.dtype), "bit_depth": stored,
            "photometric": photometric, "mode": None, "transfer_syntax": str(syntax),
            "modality": str(ds.get("Modality", "")) or None}
    if int(ds.get("SamplesPerPixel", 1)) > 1:  # colour (pydicom has converted YBR to RGB)
        return _finish(p, _luminance(arr), stored, meta, spacing=_dicom_spacing(ds))
    lut = _dicom_has_lut(ds)
    data = apply_voi_lut(apply_modality_lut(arr, ds), ds) if lut else arr
    bits = None if lut or int(ds.get("PixelRepresentation", 0)) == 1 else stored
    meta["lut_applied"] = lut
    return _finish(p, data, bits, meta, invert=photometric == "MONOCHROME1",
                   spacing=_dicom_spacing(ds))


# -- NIfTI -------------------------------------------------------------------------------------
def _plane_axes(shape: Sequence[int], ornt: np.ndarray) -> tuple[tuple[int, ...], list, int, int]:
    """Padded 3D shape, its RAS-canonical shape and the two in-plane canonical axes (a < b).

    Raises:
        ValueError: more than two axes longer than 1 (a volume, not a radiograph).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s != 1 for s in shape[3:]):
        raise ValueError(f"{len(shape)}D array with shape {shape} is not a radiograph")
    shape3 = (shape + (1,))[:3]
    canon = [0, 0, 0]
    for axis, (to, _) in enumerate(ornt):
        canon[int(to)] = shape3[axis]
    if min(canon) > 1:
        raise ValueError(f"3D volume with shape {shape} is not a radiograph")
    a, b = sorted(int(i) for i in np.argsort([-s for s in canon], kind="stable")[:2])
    return shape3, canon, a, b


def nifti_to_display(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Orient a NIfTI image array for display as a radiograph.

    Convention: the array is reoriented to nibabel's RAS+ canonical axes (``io_orientation``),
    the singleton axis is dropped, and of the two remaining axes the higher RAS axis becomes the
    rows and the lower the columns, both reversed. For a coronal image (axes R-L and S-I) this
    puts the patient's superior side at row 0 and the patient's right at column 0, as a PA
    radiograph is viewed. A 2D image written by ITK/SimpleITK (LPS direction identity, i.e.
    affine ``diag(-sx, -sy, 1, 1)`` with array ``[x, y]``) reads back as the array that ITK
    shows (``GetArrayFromImage``). :func:`display_to_nifti` is the exact inverse.

    Args:
        data: (X, Y), (X, Y, Z) with one singleton axis, or the same with trailing singleton axes.
        affine: 4x4 voxel-to-world (RAS+ mm) matrix.

    Returns:
        ((H, W) array, (row spacing, column spacing) in the affine's units).

    Raises:
        ValueError: the array has more than two axes longer than 1.
    """
    from nibabel.orientations import apply_orientation, io_orientation

    ornt = io_orientation(affine)
    shape3, canon_shape, a, b = _plane_axes(data.shape, ornt)
    canon = apply_orientation(np.asarray(data).reshape(shape3), ornt)
    plane = np.moveaxis(canon, (a, b), (0, 1)).reshape(canon_shape[a], canon_shape[b])
    voxel = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    zooms = np.empty(3)
    zooms[ornt[:, 0].astype(int)] = voxel
    return plane[::-1, ::-1].T, (float(zooms[b]), float(zooms[a]))


def display_to_nifti(pixels: np.ndarray, affine: np.ndarray,
                     shape: Sequence[int] | None = None) -> np.ndarray:
    """Inverse of :func:`nifti_to_display`: put a (H, W) display image into NIfTI array layout.

    Args:
        pixels: (H, W) image or mask in the display orientation.
        affine: the 4x4 affine the array will be saved with.
        shape: the array shape to produce (e.g. the original NIfTI's ``shape``); None means a
            2D (X, Y) array whose third axis is the implicit singleton one.

    Returns:
        The array, with ``pixels``' dtype, of shape ``shape`` (or the 2D default).

    Raises:
        ValueError: ``pixels`` does not fit ``shape`` under ``affine``.
    """
    from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

    pixels = np.asarray(pixels)
    ornt = io_orientation(affine)
    if shape is None:
        h, w = pixels.shape
        shape = (w, h) if ornt[0, 0] < ornt[1, 0] else (h, w)
    _, canon_shape, a, b = _plane_axes(shape, ornt)
    plane = pixels.T[::-1, ::-1]
    if plane.shape != (canon_shape[a], canon_shape[b]):
        raise ValueError(f"image of shape {pixels.shape} does not fit a NIfTI array of shape "
                         f"{tuple(shape)} with this affine")
    canon = np.moveaxis(plane[:, :, None], (0, 1), (a, b))
    return apply_orientation(canon, ornt_transform(_RAS, ornt)).reshape(tuple(shape))


def _nifti_header(p: Path, head: bytes):
    """The NIfTI-1 or NIfTI-2 header at the start of ``head`` (chosen by ``sizeof_hdr``)."""
    import nibabel as nib

    for cls, size in ((nib.Nifti1Header, 348), (nib.Nifti2Header, 540)):
        if len(head) >= size and size in struct.unpack("<i", head[:4]) + struct.unpack(">i", head[:4]):
            return cls(head[:size])
    raise ReadError(p, "not a NIfTI-1 or NIfTI-2 file (bad or truncated header)")


def _nifti_bytes(p: Path, max_pixels: int) -> tuple[type, bytes]:
    """(image class, file bytes) of a ``.nii``/``.nii.gz``, read after its header is checked.

    The header's dims must hold at most ``max_pixels`` values and its ``vox_offset`` at most
    :data:`METADATA_BYTES`; then exactly ``vox_offset`` + the data's size is read, so a gzip
    stream is inflated no further than the declared image needs, whatever follows.
    """
    import nibabel as nib

    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rb") as f:
        head = f.read(540)
        header = _nifti_header(p, head)
        shape = tuple(int(s) for s in header.get_data_shape())
        values = int(np.prod(shape, dtype=object)) if shape else 0
        if values > max_pixels:
            raise ReadError(p, f"image too large: NIfTI dims {shape} = {values} pixels declared, over the "
                               f"limit of {max_pixels} (max_pixels / --max-pixels)")
        offset = int(header.get_data_offset())
        if not 0 <= offset <= METADATA_BYTES:
            raise ReadError(p, f"NIfTI vox_offset {offset} outside 0..{METADATA_BYTES}")
        size = max(offset, header.sizeof_hdr) + values * header.get_data_dtype().itemsize
        data = head + f.read(max(0, size - len(head)))
    return (nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image), data


def _read_nifti(p: Path, max_pixels: int) -> Radiograph:
    import nibabel as nib

    cls, data = _nifti_bytes(p, max_pixels)
    img = cls.from_bytes(data)
    try:
        _plane_axes(img.shape, nib.orientations.io_orientation(img.affine))  # before loading data
    except ValueError as e:
        raise ReadError(p, str(e)) from None
    data = np.asanyarray(img.dataobj)  # applies scl_slope / scl_inter when set
    pixels, spacing = nifti_to_display(data, img.affine)
    meta = {"format": "nifti", "dtype": str(img.get_data_dtype()),
            "bit_depth": img.get_data_dtype().itemsize * 8, "photometric": "MONOCHROME2",
            "mode": None, "nifti_shape": tuple(int(s) for s in img.shape)}
    return _finish(p, pixels, _dtype_bits(pixels.dtype), meta, spacing=spacing,
                   affine=np.asarray(img.affine, dtype=np.float64))


# -- NumPy -------------------------------------------------------------------------------------
def load_npy(path: PathLike, max_values: int) -> np.ndarray:
    """A numeric ``.npy`` array whose header is checked before any data are read.

    The header (format 1.0 or 2.0, at most numpy's 10000 bytes) must declare a bool, integer or
    float dtype and at most ``max_values`` values; the data are then memory-mapped, never
    unpickled.

    Returns:
        A read-only memory map of the declared shape.

    Raises:
        ReadError: not a ``.npy`` file, another version or dtype, or too many values.
    """
    p = Path(path)
    fmt = np.lib.format
    with open(p, "rb") as f:
        try:
            version = fmt.read_magic(f)
            read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}[version]
            shape, _, dtype = read_header(f)
        except (ValueError, KeyError, EOFError) as e:
            raise ReadError(p, f"not a readable .npy header ({type(e).__name__}: {e})") from None
    if dtype.kind not in "biuf":
        raise ReadError(p, f"unsupported .npy dtype {dtype}")
    values = int(np.prod(shape, dtype=object)) if shape else 1
    if values > max_values:
        raise ReadError(p, f"array too large: shape {tuple(shape)} declared ({values} values), over the "
                           f"limit of {max_values} values (max_pixels / --max-pixels)")
    return np.load(p, mmap_mode="r", allow_pickle=False)


def _read_npy(p: Path, max_pixels: int) -> Radiograph:
    arr = load_npy(p, 4 * max_pixels)  # channel-last colour has up to 4 values a pixel
    if arr.ndim == 3 and 1 in arr.shape:
        arr = np.squeeze(arr, axis=arr.shape.index(1))
    bits = _dtype_bits(arr.dtype)
    meta = {"format": "npy", "dtype": str(arr.dtype), "bit_depth": bits or arr.dtype.itemsize * 8,
            "photometric": "MONOCHROME2", "mode": None}
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr, meta["photometric"] = _luminance(arr), "RGB"
    if arr.ndim == 2:
        _check_pixels(p, *arr.shape, max_pixels)
    return _finish(p, arr, bits, meta)


_READERS: dict[str, Callable[[Path, int], Radiograph]] = {
    "pil": _read_pil, "dicom": _read_dicom, "nifti": _read_nifti, "npy": _read_npy,
}
