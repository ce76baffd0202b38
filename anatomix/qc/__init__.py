"""Mask quality control: plausibility checks, shape model, RCA, orientation, verdict, report.

- :mod:`anatomix.qc.assess`: :func:`assess` (one segmentation -> one row of :data:`QC_COLUMNS`)
  and :func:`format_row` (its CSV cells);
- :mod:`anatomix.qc.run`: :func:`run_qc` (``anatomix qc``: a CSV, folder or DICOM-SEG source ->
  ``qc.csv`` and an HTML report);
- :mod:`anatomix.qc.rca`: reverse classification accuracy and its references (:func:`load_references`);
- :mod:`anatomix.qc.plausibility`, :mod:`anatomix.qc.shape_model`, :mod:`anatomix.qc.orientation`:
  the checks; :mod:`anatomix.qc.verdict`: :class:`Thresholds` and the pass/fail rule;
- :mod:`anatomix.qc.inputs`: masks made elsewhere; :mod:`anatomix.qc.report`: the HTML report;
- :mod:`anatomix.qc.atlases`: building the bundled atlases and shape model from training cases;
- :mod:`anatomix.qc.signals`: per-structure quality signals (RCA, agreement with a second opinion,
  node std, topology, area); :mod:`anatomix.qc.quality`: the predicted Dice (:class:`DiceModel`,
  bundled in ``weights/qc_dice_model.json``) and its leave-one-collection-out validation;
  :mod:`anatomix.qc.calibration`: masks of known quality, the table it is fitted on.

::

    from anatomix.qc import QC_COLUMNS, assess, load_references
    refs = load_references(None)            # bundled derived atlases (or a labelled folder)
    row = assess(seg, radiograph.pixels, node_std=seg.node_std, references=refs)
    row["Predicted Dice"], row["pred_dice_lungR"], row["qc_pass"], row["qc_reasons"], row["qc_notes"]
"""

from anatomix.qc.assess import QC_COLUMNS, assess, format_row
from anatomix.qc.orientation import heart_offset, orientation_gain
from anatomix.qc.rca import References, load_references
from anatomix.qc.run import QCSummary, run_qc
from anatomix.qc.verdict import Thresholds

__all__ = [
    "QC_COLUMNS",
    "QCSummary",
    "References",
    "Thresholds",
    "assess",
    "format_row",
    "heart_offset",
    "load_references",
    "orientation_gain",
    "run_qc",
]
