"""The bundled pediatric detectors on the data pack's ZhangLab test split (skips without the pack).

Guards the shipped weights: the normal-only protocol's AUROC (`anomaly` 0.845 whole image,
anatomix/weights/anomaly_pediatric.md; the ensemble v4 0.935 on all test films, anomaly_ensemble.md; the test
below scores every third film) and a recalibration on local normals that holds its FPR.
"""

import numpy as np
import pytest

from anatomix.anomaly.detector import Detector
from anatomix.anomaly.metrics import auroc
from anatomix.data.anomaly_pack import anomaly_cases
from anatomix.io import read_radiograph
from anatomix.models import resolve


@pytest.fixture(scope="module")
def pack_test(data_root):
    if not (data_root / "cxr-anomaly" / "manifest.csv").is_file():
        pytest.skip(f"no cxr-anomaly folder in the data pack at {data_root}")
    cases = anomaly_cases(data_root, source="zhanglab", split="test")
    if not cases:
        pytest.skip("no ZhangLab test images in the data pack")
    rads = [read_radiograph(c.path) for c in cases]
    return rads, np.array([c.abnormal for c in cases], dtype=int)


def test_bundled_detector_separates_pneumonia(pack_test):
    rads, y = pack_test
    det = Detector.load(resolve("anomaly"))
    assert det.critic is not None and det.scoring.residual == "ssim+critic"
    s = np.array([r.score for r in det.score(rads)])
    assert auroc(y, s) > 0.82


def test_bundled_ensemble_ranks_better_than_its_single_member(pack_test):
    """Every third test film (the ensemble's zones member needs lung masks: the default segmenter's)."""
    from anatomix.anomaly.run import segment_masks

    rads, y = pack_test
    keep = np.arange(0, len(rads), 3)
    films, labels = [rads[i] for i in keep], y[keep]
    masks = segment_masks(films)
    single = auroc(labels, [r.score for r in Detector.load(resolve("anomaly")).score(films, masks)])
    ensemble = auroc(labels, [r.score for r in Detector.load(resolve("anomaly-ensemble")).score(films, masks)])
    assert ensemble > 0.91 and ensemble > single + 0.03, (ensemble, single)


def test_recalibration_on_local_normals_holds_the_fpr(pack_test):
    rads, y = pack_test
    det = Detector.load(resolve("anomaly"))
    normals = np.flatnonzero(y == 0)
    cal, held = np.array_split(np.random.default_rng(1).permutation(normals), 2)
    before = np.array([r.anomalous for r in det.score([rads[i] for i in held])])
    det.calibrate(np.stack([det.preprocess(rads[i].pixels)[0] for i in cal]))
    after = [r.anomalous for r in det.score([rads[i] for i in held])]
    assert before.mean() > 0.2  # the upstream test normals are unlike the train normals
    assert np.mean(after) < 0.12  # target 5 %, about 93 fresh normals
