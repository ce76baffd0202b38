"""Mask targets on the real data pack, and the bundled pixel model (skip without them)."""

import numpy as np
import pytest

from anatomix.anatomy import dice
from anatomix.models import load_segmenter


@pytest.fixture(scope="module")
def val_cases(data_root):
    from anatomix.data.cases import pack_cases, split_cases

    return split_cases(pack_cases(data_root))[1]


def test_mask_dataset_items_and_round_trip(val_cases):
    from anatomix.anatomy import STRUCTURE_KEYS
    from anatomix.data.mask_dataset import MaskDataset

    ds = MaskDataset(val_cases[:3], 128, keep_original=True)
    item = ds[0]
    assert item["image"].shape == (1, 128, 128) and item["masks"].shape == (3, 128, 128)
    assert set(np.unique(item["masks"].numpy())) <= {0.0, 1.0}
    for c, k in enumerate(STRUCTURE_KEYS):
        back = ds.frames[0].mask_to_original(item["masks"][c].numpy())
        assert dice(back, ds.original_masks[0][k]) > 0.97


def test_bundled_pixel_model_on_validation_cases(val_cases):
    from anatomix.models import REGISTRY

    entry = REGISTRY.get("pixel")
    if not entry.available:
        pytest.skip(f"bundled pixel weights not found at {entry.path}")
    from anatomix.data.mask_dataset import case_masks
    from anatomix.io.read import read_radiograph

    seg = load_segmenter("pixel")
    cases = val_cases[:4]
    outs = seg.predict([read_radiograph(c.image) for c in cases])
    for case, out in zip(cases, outs):
        true = case_masks(case, ("lungR", "lungL", "heart"))
        assert dice(out.masks["lungR"], true["lungR"]) > 0.9
        assert dice(out.masks["lungL"], true["lungL"]) > 0.9
        assert dice(out.masks["heart"], true["heart"]) > 0.8
        assert np.isfinite(out.landmarks).all()
