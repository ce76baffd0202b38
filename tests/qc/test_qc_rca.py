"""RCA: registration carries masks correctly, Dice estimates track mask quality, references load."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from anatomix.qc.rca import (
    References,
    load_references,
    rca,
    register_batch,
    select_references,
)


@pytest.fixture(scope="module")
def refs():
    return load_references(None)


def _case(refs, i=3):
    img = np.kron(refs.images[i], np.ones((2, 2), np.float32))
    masks = {k: np.kron(refs.masks[i, j] >= 0.5, np.ones((2, 2), bool)) for j, k in enumerate(refs.keys)}
    return img, masks


def test_bundled_atlases_are_derived_and_small(refs):
    assert len(refs) >= 8 and refs.images.shape[1:] == (128, 128)
    assert refs.masks.shape == (len(refs), 3, 128, 128)
    assert min(refs.meta["members"]) >= 5  # every atlas averages at least five patients
    assert "training_statistics" in refs.meta


def test_registration_recovers_a_known_shift(refs):
    fixed = refs.images[:1]
    moving = ndimage.shift(refs.images[0], (6, -5), order=1)
    mm = ndimage.shift(refs.masks[0], (0, 6, -5), order=1)
    res = register_batch(moving, mm, fixed, deformable=False)
    before = np.mean([2 * ((mm[c] >= .5) & (refs.masks[0, c] >= .5)).sum()
                      / ((mm[c] >= .5).sum() + (refs.masks[0, c] >= .5).sum()) for c in range(3)])
    after = np.mean([2 * ((res.warped_masks[0, c] >= .5) & (refs.masks[0, c] >= .5)).sum()
                     / ((res.warped_masks[0, c] >= .5).sum() + (refs.masks[0, c] >= .5).sum()) for c in range(3)])
    assert after > 0.95 > before and res.similarity[0] > 0.95


def test_rca_tracks_mask_quality(refs):
    img, masks = _case(refs)
    good = rca(img, masks, refs, k=3)
    shifted = {k: ndimage.shift(m.astype(float), (30, 25), order=0) > 0.5 for k, m in masks.items()}
    bad = rca(img, shifted, refs, k=3)
    assert good["Dice RCA (Max)"] > 0.9 and good["Dice RCA (Mean)"] >= 0.7
    assert bad["Dice RCA (Mean)"] < good["Dice RCA (Mean)"] - 0.15
    assert good["Dice RCA (Max)"] >= good["Dice RCA (Mean)"]
    assert len(good["rca_references"].split("|")) == 3 and good["rca_references"].startswith("atlas03")


def test_rca_with_only_lungs(refs):
    img, masks = _case(refs)
    r = rca(img, {"lungR": masks["lungR"], "lungL": masks["lungL"]}, refs, k=1, deformable=False)
    assert 0.8 < r["Dice RCA (Max)"] <= 1.0


def test_select_references_by_image_and_embedding(refs):
    assert select_references(refs.images[5], refs, 2)[0] == 5
    emb = np.eye(len(refs))
    r2 = References(refs.images, refs.masks, refs.ids, refs.keys, embeddings=emb)
    assert list(select_references(refs.images[0], r2, 1, query_embedding=emb[7])) == [7]


def test_folder_references_and_npz_roundtrip(tmp_path, refs):
    for i in range(2):
        img, masks = _case(refs, i)
        Image.fromarray((img * 255).astype(np.uint8)).save(tmp_path / f"r{i}.png")
        for k, m in masks.items():
            Image.fromarray(m.astype(np.uint8)).save(tmp_path / f"r{i}_{k}.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "unlabelled.png")
    folder = load_references(tmp_path)
    assert folder.ids == ["r0", "r1"] and folder.images.shape == (2, 128, 128)
    assert np.mean((folder.masks[0] >= .5) == (refs.masks[0] >= .5)) > 0.99
    folder.save(tmp_path / "refs.npz")
    again = load_references(tmp_path / "refs.npz")
    assert again.ids == folder.ids and np.abs(again.images - folder.images).max() <= 1 / 255 + 1e-6


def test_missing_reference_set_is_a_clear_error(tmp_path):
    from anatomix.errors import AnatomixError

    with pytest.raises(AnatomixError, match="no labelled reference"):
        load_references(tmp_path)


def test_latent_embeddings_select_references(refs):
    pytest.importorskip("torch_geometric")
    from anatomix.graphs.inference import GraphSegmenter
    from anatomix.graphs.model import GraphConfig, HybridGNet
    from anatomix.qc.rca import latent_embeddings

    seg = GraphSegmenter(HybridGNet(GraphConfig(image_size=64)))
    emb = latent_embeddings(seg, list(refs.images[:3]))
    assert emb.shape == (3, seg.config.latent_dim) and np.isfinite(emb).all()
    r3 = References(refs.images[:3], refs.masks[:3], refs.ids[:3], refs.keys, embeddings=emb)
    assert select_references(refs.images[0], r3, 1, query_embedding=emb[2])[0] == 2


def test_references_from_cases(tmp_path, refs):
    from anatomix.data.cases import folder_cases
    from anatomix.errors import AnatomixError
    from anatomix.qc.rca import references_from_cases

    img, masks = _case(refs, 0)
    Image.fromarray((img * 255).astype(np.uint8)).save(tmp_path / "r0.png")
    for k, m in masks.items():
        Image.fromarray(m.astype(np.uint8)).save(tmp_path / f"r0_{k}.png")
    Image.fromarray((img * 255).astype(np.uint8)).save(tmp_path / "partial.png")
    Image.fromarray(masks["lungR"].astype(np.uint8)).save(tmp_path / "partial_lungR.png")
    r = references_from_cases(folder_cases(tmp_path), source="my cases")
    assert r.ids == ["r0"] and r.keys == ("lungR", "lungL", "heart") and r.meta == {"source": "my cases"}
    with pytest.raises(AnatomixError, match="in my cases$"):
        references_from_cases([c for c in folder_cases(tmp_path) if c.case_id == "partial"], source="my cases")


def test_box_local_similarity_is_monais_lncc():
    """The box-filter local NCC RCA optimises is MONAI's rectangular-kernel LNCC (negated)."""
    import torch
    from monai.losses import LocalNormalizedCrossCorrelationLoss

    from anatomix.qc.rca import _box_local_similarity

    g = torch.Generator().manual_seed(0)
    fix, mov = torch.rand(3, 1, 32, 32, generator=g), torch.rand(3, 1, 32, 32, generator=g)
    for kernel in (5, 7):
        ours = _box_local_similarity(fix, kernel)(mov)
        monai = -LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=kernel, reduction="none")(
            mov, fix).flatten(1).mean(1)
        assert torch.allclose(ours, monai, atol=1e-5)


@pytest.mark.parametrize("name", ["DEFAULT_REGISTRATION", "LEGACY_REGISTRATION"])
def test_batched_registration_equals_one_by_one(refs, name):
    """All k references registered in one batched optimisation give each reference the result of
    registering it alone (the batch items do not interact)."""
    from anatomix.qc import rca as rca_module

    settings = getattr(rca_module, name)
    img, masks = _case(refs, 3)
    img = img[::2, ::2]
    mm = np.stack([m[::2, ::2] for m in masks.values()]).astype(np.float32)
    idx = [3, 0, 5]
    batch = register_batch(img, mm, refs.images[idx], settings)
    for j, i in enumerate(idx):
        one = register_batch(img, mm, refs.images[i:i + 1], settings)
        assert abs(one.similarity[0] - batch.similarity[j]) < 1e-4
        assert one.deformable[0] == batch.deformable[j]
        assert np.mean((one.warped_masks[0] >= .5) != (batch.warped_masks[j] >= .5)) < 1e-3


def test_fast_registration_recovers_a_shift_like_the_legacy_one(refs):
    from anatomix.qc.rca import DEFAULT_REGISTRATION, LEGACY_REGISTRATION

    assert DEFAULT_REGISTRATION.scale > LEGACY_REGISTRATION.scale
    fixed = refs.images[:1]
    moving = ndimage.shift(refs.images[0], (6, -5), order=1)
    mm = ndimage.shift(refs.masks[0], (0, 6, -5), order=1)
    for settings in (DEFAULT_REGISTRATION, LEGACY_REGISTRATION):
        res = register_batch(moving, mm, fixed, settings)
        after = np.mean([2 * ((res.warped_masks[0, c] >= .5) & (refs.masks[0, c] >= .5)).sum()
                         / ((res.warped_masks[0, c] >= .5).sum() + (refs.masks[0, c] >= .5).sum())
                         for c in range(3)])
        assert after > 0.93 and res.similarity[0] > 0.93
    assert "32 px" in DEFAULT_REGISTRATION.describe()
