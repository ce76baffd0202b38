"""Files that claim far more than they hold: decompression bombs and lying headers.

Shared by the reader-limit tests and ``bench/security.py`` (which measures the memory that
``anatomix segment`` needs to refuse them).
"""

from __future__ import annotations

import csv
import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
from dicom_synth import write_dicom
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless


def nifti_gzip_bomb(path: Path, side: int = 32000, chunk: int = 1 << 24) -> Path:
    """A ``.nii.gz`` of a ``side x side`` uint8 image of zeros (32000: 1 GB inflated, ~1 MB on disk)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((side, side))
    header.set_data_dtype(np.uint8)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    zeros, left = bytes(chunk), side * side
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header.binaryblock + b"\0" * 4)
        while left:
            f.write(zeros[:min(chunk, left)])
            left -= min(chunk, left)
    return path


def dicom_claiming(path: Path, rows: int = 60000, cols: int = 60000) -> Path:
    """A DICOM whose Rows x Columns claim a huge image and whose PixelData hold 4 KiB."""
    return write_dicom(path, pixel_data=bytes(4096), shape=(rows, cols))


def dicom_rle_bomb(path: Path, side: int = 1024, inflated: int = 2 << 30) -> Path:
    """An RLE Lossless DICOM of a ``side x side`` 8-bit frame (within any limit) whose one
    segment inflates to ``inflated`` bytes: 2-byte runs of 128 zeros, ~``inflated / 64`` on disk."""
    runs = b"\x81\x00" * (inflated // 128)
    frame = struct.pack("<16L", 1, 64, *[0] * 14) + runs
    return write_dicom(path, pixel_data=encapsulate([frame]), shape=(side, side), syntax=RLELossless,
                       BitsAllocated=8, BitsStored=8, HighBit=7)


def npy_claiming(path: Path, shape=(1_000_000, 1_000_000)) -> Path:
    """A ``.npy`` whose header declares ``shape`` uint8 (1 TB) and which holds no data."""
    from numpy.lib import format as npy_format

    with open(path, "wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
    return path


BOMBS = {"bomb.nii.gz": nifti_gzip_bomb, "claims.dcm": dicom_claiming, "rle_bomb.dcm": dicom_rle_bomb,
         "claims.npy": npy_claiming}
"""File name -> builder of every hostile file that ``anatomix segment`` must refuse cheaply."""


_PEAK = """
import resource, sys
from anatomix.cli.main import cli
try:
    cli(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(f"exit={code} peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}", file=sys.stderr)
"""


def run_segment_measuring_peak(inputs: list[Path], out: Path) -> tuple[int, float, list[list[str]]]:
    """Run ``anatomix segment INPUTS -o OUT --no-qc`` in a fresh process: (exit status, peak RSS
    in MB, rows of errors.csv)."""
    r = subprocess.run([sys.executable, "-c", _PEAK, "segment", *map(str, inputs), "-o", str(out), "--no-qc",
                        "--workers", "2"], capture_output=True, text=True, timeout=600)
    line = r.stderr.strip().splitlines()[-1]
    code, peak = (part.split("=")[1] for part in line.split())
    with open(out / "errors.csv", newline="") as f:
        return int(code), float(peak), list(csv.reader(f))[1:]
