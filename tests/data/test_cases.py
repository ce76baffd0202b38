"""Cases, split and preprocessing."""

import numpy as np
from PIL import Image

from anatomix.data.cases import SegCase, folder_cases, pack_cases, split_cases
from anatomix.data.preprocess import normalise_intensity, to_model_frame


def _cases(n, strata=("a", "b")):
    return [SegCase(f"c{i}", None, group=f"p{i // 2}", stratum=strata[i % len(strata)]) for i in range(n)]


def test_split_is_deterministic_grouped_and_stratified():
    cases = _cases(200)
    train, val = split_cases(cases, 0.2, seed=3)
    assert split_cases(cases, 0.2, seed=3) == (train, val)
    assert not {c.group for c in train} & {c.group for c in val}
    assert len(train) + len(val) == 200
    for s in ("a", "b"):
        n_val = sum(c.stratum == s for c in val)
        assert abs(n_val - 20) <= 1
    assert split_cases(cases, 0.2, seed=4)[1] != val


def test_folder_cases_pairs_images_with_masks(tmp_path):
    img = Image.fromarray(np.zeros((20, 20), np.uint8))
    img.save(tmp_path / "a.png")
    img.save(tmp_path / "a_lungR.png")
    img.save(tmp_path / "a_lungL.png")
    img.save(tmp_path / "b.png")  # no masks: not a labelled case
    cases = folder_cases(tmp_path)
    assert [c.case_id for c in cases] == ["a"]
    assert set(cases[0].masks) == {"lungR", "lungL"}


def test_pack_cases(data_root):
    cases = pack_cases(data_root)
    assert len(cases) >= 150
    assert all(c.landmarks is not None and c.image.is_file() for c in cases)
    train, val = split_cases(cases)
    assert 0.15 < len(val) / len(cases) < 0.25


def test_normalise_intensity_is_robust():
    img = np.linspace(0.2, 0.4, 10000, dtype=np.float32).reshape(100, 100)
    img[0, 0] = 1.0  # one hot pixel does not set the scale
    out = normalise_intensity(img)
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.median(out) > 0.4
    assert np.all(normalise_intensity(np.full((8, 8), 0.3)) == 0)


def test_to_model_frame_shape():
    image, frame = to_model_frame(np.random.default_rng(0).random((300, 200)).astype(np.float32), 64)
    assert image.shape == (64, 64) and frame.pad == (50.0, 0.0)
