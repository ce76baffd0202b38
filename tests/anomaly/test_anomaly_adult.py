"""The bundled adult detector (``anomaly-adult``) on our validation split of the data pack (skips
without the pack).

Guards the shipped weights: tuberculosis against the validation-split normals of Montgomery and
Shenzhen, scored in the lungs of the pack's manual masks (measured AUROC 0.770; 0.776 with the
default segmenter's masks, see anatomix/weights/anomaly_adult.md), and the stored threshold on
those unseen normals of the fit population (3.4 % flagged here, target 5 %).
"""

import numpy as np
import pytest
from PIL import Image

from anatomix.anomaly.metrics import auroc
from anatomix.data.cases import labelled_cases, split_cases
from anatomix.io import read_radiograph
from anatomix.models import load_detector


@pytest.fixture(scope="module")
def tb_validation(data_root):
    """(radiographs, lung masks, labels: 1 = tuberculosis) of the validation split's Montgomery and
    Shenzhen normal and TB films."""
    cases = [c for c in split_cases(labelled_cases(data_root, sources=["montgomery", "shenzhen"]))[1]
             if c.meta.get("label") in ("normal", "tb")]
    if not any(c.meta["label"] == "tb" for c in cases):
        pytest.skip("no tuberculosis films in the data pack's cxr-lungs folder")
    masks = [{k: np.asarray(Image.open(p)) > 0 for k, p in c.masks.items()} for c in cases]
    return [read_radiograph(c.image) for c in cases], masks, np.array([c.meta["label"] == "tb" for c in cases])


def test_bundled_adult_detector_ranks_tuberculosis_above_unseen_normals(tb_validation):
    rads, masks, y = tb_validation
    det = load_detector("anomaly-adult")
    assert det.method == "rd" and det.scoring.primary == "lungs"
    res = det.score(rads, masks)
    assert {r.score_region for r in res} == {"lungs"}
    assert auroc(y.astype(int), [r.score for r in res]) > 0.74
    flagged = np.mean([r.anomalous for r, tb in zip(res, y) if not tb])
    assert flagged < 0.10, f"{flagged:.1%} of unseen normals flagged at a 5 % target"
