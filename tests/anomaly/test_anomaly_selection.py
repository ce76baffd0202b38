"""Choosing a detector's residual from normals only (synthetic opacities on held-out normals)."""

import numpy as np
from anomaly_synth import normal_images

from anatomix.anomaly.metrics import auroc
from anatomix.anomaly.selection import select_residual, synthetic_anomalies
from anatomix.anomaly.train import fit_detector

CANDIDATES = ["auto", "l2", "critic", "ssim+critic"]


def test_select_residual_keeps_the_candidate_that_best_separates_painted_normals():
    det = fit_detector(normal_images(24, 32, seed=0), "ae", 32, epochs=3, batch_size=8, progress=False,
                       critic_epochs=1, seed=0)
    held = normal_images(12, 32, seed=9)
    best, aurocs = select_residual(det, held, CANDIDATES, copies=2, seed=1)
    assert list(aurocs) == CANDIDATES and best == max(CANDIDATES, key=aurocs.get)
    assert det.scoring.residual == best
    # the candidates differ: the realness critic sees the painted patches, this barely trained
    # autoencoder's pixel residuals do not (its errors everywhere drown them), and the choice follows
    assert aurocs[best] > 0.75 and min(aurocs.values()) < 0.55
    # the kept residual scores like a fresh computation of it on the same images
    painted = synthetic_anomalies(held, 2, 1)
    maps = det.model_maps(np.concatenate([held, painted]))
    s = [det.raw_scores(m, None)["image"] for m in maps]
    assert auroc(np.r_[np.zeros(12), np.ones(24)], s) == aurocs[best]
