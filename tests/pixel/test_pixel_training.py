"""PixelTask in the shared loop: overfits a tiny synthetic set; checkpoints reload identically;
the mask augmentation moves masks with the image."""

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from anatomix.data.augment import AugmentConfig, MaskAugment
from anatomix.models import load_segmenter
from anatomix.pixel.models import PixelConfig
from anatomix.pixel.train import PixelTask
from anatomix.training import TrainConfig, fit

SIZE = 32


def _sample(i: int):
    """A dark image with two bright discs (two structures) and an overlapping third one."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    discs = []
    for cx, cy in ((9, 16), (23, 16), (16, 20)):
        cx, cy = cx + rng.uniform(-2, 2), cy + rng.uniform(-2, 2)
        discs.append((xx - cx) ** 2 + (yy - cy) ** 2 < 36)
    masks = np.stack(discs).astype(np.float32)
    image = 0.1 + 0.4 * masks[0] + 0.4 * masks[1] + 0.3 * masks[2]
    return np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1).astype(np.float32), masks


class _Discs(Dataset):
    def __init__(self, n):
        self.items = [_sample(i) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        image, masks = self.items[i]
        return {"image": torch.from_numpy(image)[None], "masks": torch.from_numpy(masks),
                "index": torch.tensor(i)}


def _config():
    return PixelConfig(arch="monai_unet", image_size=SIZE,
                       kwargs={"channels": [8, 16, 32], "num_res_units": 1})


def test_loss_parts_and_gradients():
    task = PixelTask(_config())
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(iter(torch.utils.data.DataLoader(_Discs(4), batch_size=4)))
    loss, parts = task.loss(model, batch, 0)
    loss.backward()
    assert loss.ndim == 0 and parts["loss"] == pytest.approx(loss.item())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_overfits_and_checkpoint_reloads_identically(tmp_path):
    data = _Discs(8)
    task = PixelTask(_config())
    cfg = TrainConfig(epochs=60, batch_size=2, lr=1e-2, val_every=10, threads=1)
    best = fit(task, data, data, cfg, tmp_path, progress=False)
    state = torch.load(best, weights_only=True)
    assert state["family"] == "pixel"
    assert state["metrics"]["score"] > 0.9, state["metrics"]


    seg = load_segmenter(str(best))
    model = PixelConfig.from_dict(state["pixel_config"]).build()
    model.load_state_dict(state["model"])
    model.eval()
    x = torch.stack([data[i]["image"] for i in range(4)])
    with torch.no_grad():
        a, b = model(x), seg.model(x)
    assert torch.equal(a, b)
    # the checkpoint's metrics are reproduced by the reloaded model
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    with torch.no_grad():
        again = task.validate(seg.model, loader)
    assert again["score"] == pytest.approx(state["metrics"]["score"], abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_mask_augment_moves_masks_with_image(seed):
    aug = MaskAugment(AugmentConfig(rotate_deg=25, scale=0.15, translate=0.1, p_intensity=0.0), seed=seed)
    image, masks = _sample(seed)
    image = masks[0].copy()  # the image is the first mask: both must move identically
    out, moved = aug(image, masks)
    assert moved.shape == masks.shape and set(np.unique(moved)) <= {0.0, 1.0}
    assert np.mean((out >= 0.5) == (moved[0] > 0.5)) > 0.99
    assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1


def test_bundle_keeps_what_inference_needs(tmp_path):
    from anatomix.pixel.train import bundle_checkpoint

    task = PixelTask(_config())
    torch.manual_seed(0)
    model = task.build_model().eval()
    torch.save({"model": model.state_dict(), "optimizer": {"junk": 1}, "epoch": 3,
                "metrics": {"score": 0.5}, **task.checkpoint_extra()}, tmp_path / "best.pt")
    kept = bundle_checkpoint(tmp_path / "best.pt", tmp_path / "bundle.pt")
    assert "optimizer" not in kept and kept["family"] == "pixel"
    seg = load_segmenter(str(tmp_path / "bundle.pt"))
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(seg.model(x), model(x))


def _training_checkpoint(path, task: PixelTask, seed: int) -> torch.nn.Module:
    """Save a freshly initialised model of ``task`` as a training checkpoint; return it."""
    torch.manual_seed(seed)
    model = task.build_model().eval()
    torch.save({"model": model.state_dict(), "epoch": seed, "metrics": {"score": seed / 10},
                **task.checkpoint_extra()}, path)
    return model


def test_bundled_ensemble_averages_its_members_probabilities(tmp_path):
    from anatomix.pixel.train import bundle_checkpoint

    task = PixelTask(_config())
    members = [_training_checkpoint(tmp_path / f"m{i}.pt", task, i) for i in range(3)]
    kept = bundle_checkpoint([tmp_path / f"m{i}.pt" for i in range(3)], tmp_path / "ensemble.pt")
    assert kept["pixel_config"]["members"] == 3
    assert [m["epoch"] for m in kept["members"]] == [0, 1, 2]
    seg = load_segmenter(str(tmp_path / "ensemble.pt"))
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        mean = torch.stack([torch.sigmoid(m(x)) for m in members]).mean(0)
        single = torch.sigmoid(members[0](x))
    got = torch.from_numpy(seg.probabilities_of(x))
    assert torch.allclose(got, mean, atol=1e-5)
    assert not torch.allclose(got, single, atol=1e-3)  # the members differ: the mean is not one of them


def test_ensemble_refuses_members_of_different_architectures(tmp_path):
    from anatomix.errors import CheckpointError
    from anatomix.pixel.train import bundle_checkpoint

    _training_checkpoint(tmp_path / "a.pt", PixelTask(_config()), 0)
    other = _config()
    other.kwargs = {**other.kwargs, "channels": [8, 16]}
    _training_checkpoint(tmp_path / "b.pt", PixelTask(other), 1)
    with pytest.raises(CheckpointError, match="differs"):
        bundle_checkpoint([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "ensemble.pt")


def test_ensemble_is_not_a_member(tmp_path):
    """An ensemble file cannot join another ensemble: its members' checkpoints must be joined."""
    from anatomix.errors import CheckpointError
    from anatomix.pixel.train import bundle_checkpoint

    task = PixelTask(_config())
    for i in range(2):
        _training_checkpoint(tmp_path / f"m{i}.pt", task, i)
    bundle_checkpoint([tmp_path / "m0.pt", tmp_path / "m1.pt"], tmp_path / "ensemble.pt")
    with pytest.raises(CheckpointError, match="already an ensemble"):
        bundle_checkpoint([tmp_path / "ensemble.pt", tmp_path / "m0.pt"], tmp_path / "bigger.pt")
