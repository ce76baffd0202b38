"""Write the seed corpus: one small valid file per target, under ``tests/fuzz_corpus/<target>/``.

    python tests/fuzz/seeds.py
"""

from __future__ import annotations

import gzip
import io
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "fuzz_corpus"


def _pil(fmt: str, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.arange(24 * 20).reshape(20, 24) % 256).astype(np.uint8)).save(buf, fmt, **kw)
    return buf.getvalue()


def _dicom(name: str, **kw) -> bytes:
    sys.path.insert(0, str(HERE.parent))
    from dicom_synth import write_dicom

    path = write_dicom(Path(tempfile.mkdtemp()) / name, **kw)
    return path.read_bytes()


def _rle_dicom() -> bytes:
    """An 8-bit RLE Lossless frame of 20 rows, each one literal run of 24 bytes."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    rows = b"".join(bytes([23]) + bytes(range(r, r + 24)) for r in range(20))
    frame = struct.pack("<16L", 1, 64, *[0] * 14) + rows
    return _dicom("r.dcm", pixel_data=encapsulate([frame]), shape=(20, 24), syntax=RLELossless,
                  BitsAllocated=8, BitsStored=8, HighBit=7)


def _nifti() -> bytes:
    import nibabel as nib

    return nib.Nifti1Image((np.arange(20 * 24).reshape(24, 20) % 300).astype(np.int16), np.eye(4)).to_bytes()


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, (np.arange(20 * 24).reshape(20, 24) % 256).astype(np.uint8))
    return buf.getvalue()


def _chexmask() -> bytes:
    return (b"image_id,Height,Width,Landmarks,Right Lung,Left Lung,Heart,Dice RCA (Mean)\n"
            b"a,20,24,\"[[1, 2], [3, 4], [5, 6]]\",1 5 30 4,,26 3,0.9\n"
            b"b,16,16,\"1,2,3,4\",,,,\n")


def _dicom_seg() -> bytes:
    """A two-segment SEG written by the package over a 20 x 24 synthetic source (needs highdicom)."""
    from anatomix.io.dicom_seg import write_dicom_seg

    folder = Path(tempfile.mkdtemp())
    source = folder / "src.dcm"
    source.write_bytes(_dicom("src.dcm", stored=(np.arange(20 * 24).reshape(20, 24) % 4096).astype(np.uint16),
                              StudyInstanceUID="1.2.826.0.1.3680043.8.498.1", SeriesInstanceUID="1.2.826.0.1.3680043.8.498.2"))
    masks = {"lungR": np.zeros((20, 24), bool), "lungL": np.zeros((20, 24), bool)}
    masks["lungR"][4:16, 3:10] = True
    masks["lungL"][4:16, 14:21] = True
    return write_dicom_seg(folder / "s.dcm", masks, source, algorithm="anatomix seed", version="0").read_bytes()


def seeds() -> dict[str, dict[str, bytes]]:
    """{target: {file name: bytes}}."""
    img = (np.arange(20 * 24).reshape(20, 24) * 7 % 4096).astype(np.uint16)
    return {"png": {"seed": _pil("PNG")}, "jpeg": {"seed": _pil("JPEG", quality=90)}, "tiff": {"seed": _pil("TIFF")},
            "dicom": {"seed": _dicom("n.dcm", stored=img), "seed_rle": _rle_dicom()},
            "nifti": {"seed": _nifti()}, "nifti_gz": {"seed": gzip.compress(_nifti(), mtime=0)},
            "npy": {"seed": _npy()}, "mask": {"seed": _pil("PNG")}, "chexmask": {"seed": _chexmask()},
            "dicom_seg": {"seed": _dicom_seg()}}


if __name__ == "__main__":
    for target, files in seeds().items():
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (CORPUS / target / name).write_bytes(data)
            print(target, name, len(data))
