"""Build examples/dicom/nih_00000001_000.dcm: a full-resolution DX DICOM for `make demo`.

Made from the permissively licensed NIH ChestX-ray14 image 00000001_000 (examples/images,
128x128 8-bit; see examples/images/ATTRIBUTION.md) by **bicubic upsampling 14x to 1792x1792**, keeping
the top 1568 rows (the abdomen below the diaphragm is cut, so the image is not square) and
scaling to 12-bit samples (BitsStored 12): it has the size, bit depth and header of a real
digital radiograph, not its detail. Header: Digital X-Ray Image Storage - For Presentation,
MONOCHROME2, PixelSpacing = ImagerPixelSpacing = 0.2 mm (a 314 x 358 mm field, a common CR/DX
size), fresh UIDs, RLE Lossless (so the file stays under 3 MB), no patient data beyond an
anonymous name and id. Run once; the file is committed:

    .venv/bin/python tools/make_example_dicom.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "examples" / "images" / "nih_00000001_000.png"
TARGET = ROOT / "examples" / "dicom" / "nih_00000001_000.dcm"
SIDE, ROWS, SPACING = 1792, 1568, 0.2


def main() -> None:
    small = Image.open(SOURCE).convert("F")
    big = np.asarray(small.resize((SIDE, SIDE), Image.BICUBIC), dtype=np.float64)[:ROWS]
    stored = np.clip(np.rint(big / 255.0 * 4095.0), 0, 4095).astype(np.uint16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Anonymous^NIH", "NIH-00000001", "", ""
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "", "", "", "1"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "NIH CXR14 00000001_000 upsampled (anatomix example)"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DX", 1, 1
    ds.Manufacturer = "anatomix example (tools/make_example_dicom.py)"
    ds.BodyPartExamined, ds.PresentationIntentType = "CHEST", "FOR PRESENTATION"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = "128x128 8-bit PNG upsampled bicubic to 1792x1792, top 1568 rows, 12 bits"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = ds.ImagerPixelSpacing = [SPACING, SPACING]
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
    ds.PixelData = stored.tobytes()
    ds.compress(RLELossless, stored)
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(TARGET, enforce_file_format=True)
    print(f"{TARGET}: {TARGET.stat().st_size / 1e6:.2f} MB, {ROWS}x{SIDE}, SOP {ds.SOPInstanceUID}")


if __name__ == "__main__":
    main()
