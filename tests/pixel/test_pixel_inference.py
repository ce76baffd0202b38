"""PixelSegmenter: original-frame outputs of any shape, landmarks traced from masks,
raw output and probabilities on request, batch independence."""

import numpy as np
import pytest
import torch

from anatomix.anatomy import LUNGS_HEART, dice, landmarks_to_masks, masks_to_landmarks
from anatomix.errors import CheckpointError
from anatomix.io.record import Radiograph
from anatomix.pixel.inference import PixelSegmenter
from anatomix.pixel.models import PixelConfig


class _Oracle(torch.nn.Module):
    """Logits from fixed masks in the 64 px model frame (plus an island in lungR and a hole in
    the heart), so the post-processing and the geometry can be checked exactly."""

    def __init__(self, masks):
        super().__init__()
        self.register_buffer("logits", torch.from_numpy(np.where(masks, 10.0, -10.0)).float())

    def forward(self, x):
        return self.logits[None].expand(x.shape[0], -1, -1, -1).clone()


def _segmenter(size=64):
    masks = [_ellipse(size, b) for b in ((0.15, 0.15, 0.45, 0.85), (0.55, 0.15, 0.85, 0.85), (0.4, 0.5, 0.7, 0.8))]
    masks = np.stack(masks)
    noisy = masks.copy()
    noisy[0, 2:5, 58:61] = True  # island
    noisy[2, 40:44, 33:37] = False  # hole in the heart
    cfg = PixelConfig(arch="monai_unet", image_size=size, kwargs={"channels": [4, 8], "num_res_units": 0})
    return PixelSegmenter(_Oracle(noisy), cfg), masks


def _ellipse(size, box):
    x0, y0, x1, y1 = np.array(box) * size
    yy, xx = np.mgrid[:size, :size] + 0.5
    return ((xx - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((yy - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2 < 1


def _radiograph(h, w, seed=0):
    return Radiograph(np.random.default_rng(seed).random((h, w)).astype(np.float32))


@pytest.mark.parametrize("shape", [(64, 64), (128, 128), (96, 80), (70, 100)])
def test_outputs_in_original_frame(shape):
    seg, _ = _segmenter()
    (out,) = seg.predict([_radiograph(*shape)], keep_raw=True, with_probabilities=True)
    assert out.shape == shape and out.template is LUNGS_HEART
    assert set(out.masks) == {"lungR", "lungL", "heart"}
    assert all(m.shape == shape and m.dtype == bool for m in out.masks.values())
    assert out.landmarks.shape == (120, 2) and np.isfinite(out.landmarks).all()
    assert out.extra["probabilities"].shape == (3,) + shape
    assert set(out.extra["raw_masks"]) == set(out.masks)


def test_postprocessing_on_by_default_raw_kept_on_request():
    seg, clean = _segmenter()
    (out,) = seg.predict([_radiograph(64, 64)], keep_raw=True)
    raw = out.extra["raw_masks"]
    from anatomix.pixel.postprocess import topology

    assert topology(raw["lungR"])["components"] == 2 and topology(out.masks["lungR"])["components"] == 1
    assert topology(raw["heart"])["holes"] == 1 and topology(out.masks["heart"])["holes"] == 0
    for c, k in enumerate(("lungR", "lungL", "heart")):
        assert np.array_equal(out.masks[k], clean[c])
    (plain,) = seg.predict([_radiograph(64, 64)], postprocess=False)
    assert np.array_equal(plain.masks["lungR"], raw["lungR"])
    assert "probabilities" not in plain.extra and "raw_masks" not in plain.extra


def test_landmarks_trace_the_masks():
    seg, _ = _segmenter()
    (out,) = seg.predict([_radiograph(128, 128)])
    redrawn = landmarks_to_masks(out.landmarks, out.shape)
    for k in out.masks:
        assert dice(redrawn[k], out.masks[k]) > 0.95


def test_empty_structure_gives_nan_nodes():
    masks = {"lungR": np.zeros((32, 32), bool), "lungL": _ellipse(32, (0.2, 0.2, 0.8, 0.8)),
             "heart": _ellipse(32, (0.3, 0.3, 0.6, 0.6))}
    xy = masks_to_landmarks(masks, missing="nan")
    assert np.isnan(xy[:44]).all() and np.isfinite(xy[44:]).all()


def test_batch_independence_and_determinism():
    torch.manual_seed(0)
    cfg = PixelConfig(arch="monai_unet", image_size=32, kwargs={"channels": [4, 8], "num_res_units": 0})
    seg = PixelSegmenter(cfg.build(), cfg)
    rs = [_radiograph(40, 30, s) for s in range(3)]
    batch = seg.predict(rs, with_probabilities=True)
    alone = seg.predict([rs[1]], with_probabilities=True)[0]
    assert np.allclose(batch[1].extra["probabilities"], alone.extra["probabilities"], atol=1e-5)


def test_rejects_a_non_pixel_checkpoint(tmp_path):
    torch.save({"family": "graph", "model": {}}, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="not a pixel"):
        PixelSegmenter.from_state(torch.load(tmp_path / "g.pt"), tmp_path / "g.pt")
