"""Resource limits for files from strangers (see SECURITY.md).

Kept apart from the readers so that the command line can show the defaults without importing
the image libraries.
"""

MAX_PIXELS = 50_000_000
"""Default largest image accepted by every reader, in pixels (rows x columns, any format).

About 7000 x 7000: the largest chest detectors give about 4300 x 4300 (18.5 M pixels). Each
reader checks the size the file declares (image header, DICOM Rows/Columns, NIfTI dims, ``.npy``
header) before it allocates or decompresses anything, so one image being read costs at most
about 20-40 bytes x ``max_pixels`` of memory whatever the file claims. Raise it with
``--max-pixels`` / ``max_pixels=`` for larger images.
"""

METADATA_BYTES = 1 << 24
"""Room for what is not pixels (16 MiB): the largest NIfTI header with extensions
(``vox_offset``) accepted, and what a deflated DICOM data set may hold besides its pixels."""

BYTES_PER_PIXEL = 8
"""Widest stored pixel counted by the byte caps (a 64-bit float sample)."""
