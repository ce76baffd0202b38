"""One builder of synthetic DICOM files for the reader, hostile-input and batch tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def write_dicom(path: Path, stored: np.ndarray | None = None, photometric: str = "MONOCHROME2", *,
                pixel_data: bytes | None = None, shape: tuple[int, int] = (32, 32),
                syntax: str = ExplicitVRLittleEndian, **elements) -> Path:
    """Write a single-frame DX DICOM file (Digital X-Ray, for presentation) of 12-bit samples.

    Args:
        stored: ``(rows, cols)`` samples, written as little-endian uint16 PixelData; or None.
        pixel_data: raw PixelData bytes when ``stored`` is None (None too = no PixelData at all).
        shape: Rows, Columns when ``stored`` is None.
        syntax: transfer syntax UID of the file meta.
        elements: further data elements, e.g. ``RescaleSlope=2.0``.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = shape if stored is None else stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if stored is not None:
        pixel_data = np.asarray(stored).astype("<u2").tobytes()
    if pixel_data is not None:
        ds.PixelData = pixel_data
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path
