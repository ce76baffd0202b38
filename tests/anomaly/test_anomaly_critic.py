"""The realness critic: it learns real-normal texture vs reconstruction blur, so a HAZY image
(what the pixel residual of a blurry reconstruction misses) reads as un-real; the detector sums it
with a residual only through statistics of held-out normals."""

import numpy as np
import pytest
import torch
from anomaly_synth import normal_images
from scipy import ndimage

from anatomix.anomaly.critic import PatchCritic, critic_map
from anatomix.anomaly.detector import Detector, ScoringConfig
from anatomix.anomaly.metrics import auroc
from anatomix.anomaly.models import create_model
from anatomix.anomaly.train import fit_critic, fit_detector, fit_model
from anatomix.errors import UsageError


def textured(n, seed):
    """Normal images with fine 'vessel' texture (high frequency a small-latent AE cannot keep)."""
    rng = np.random.default_rng(seed)
    base = normal_images(n, 32, seed=seed)
    tex = ndimage.gaussian_filter(rng.normal(0, 1, base.shape), (0, 0.7, 0.7))
    return np.clip(base + 0.06 * tex / tex.std(), 0, 1).astype(np.float32)


def hazy(imgs):
    """The same anatomy behind a diffuse opacity: blurred and lifted towards white."""
    return np.clip(0.8 * ndimage.gaussian_filter(imgs, (0, 1.2, 1.2)) + 0.15, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    imgs = textured(96, seed=1)
    model = create_model("ae", image_size=32, channels=[8, 16], latent=4, uncertainty=False)
    fit_model(model, imgs, epochs=30, batch_size=16, progress=False)
    critic = fit_critic(model, imgs, epochs=25, batch_size=16, lr=1e-3, progress=False, channels=(8, 16, 16))
    return model, critic


def test_critic_shapes_and_config():
    c = PatchCritic((8, 16, 16), members=2)
    x = torch.rand(3, 1, 32, 32)
    assert c(x).shape == (3, 1, 7, 7)  # 32 -> 16 -> 8 -> 7 (the stride-1 4x4 conv)
    a, b = c.member_logits(x)
    assert not torch.equal(a, b) and torch.allclose(c(x), (a + b) / 2)  # independent members, averaged
    assert critic_map(c, x).shape == (3, 1, 32, 32)
    with pytest.raises(UsageError, match="3 channel widths"):
        PatchCritic((8, 16))
    with pytest.raises(UsageError, match="at least one member"):
        PatchCritic(members=0)


def test_critic_tells_fresh_normals_from_reconstructions(fitted):
    model, critic = fitted
    fresh = torch.from_numpy(textured(40, seed=7))[:, None]
    with torch.no_grad():
        rec = model.reconstruct(fresh)
        real, fake = critic(fresh).mean((1, 2, 3)), critic(rec).mean((1, 2, 3))
    assert auroc(np.r_[np.zeros(40), np.ones(40)], np.r_[real.numpy(), fake.numpy()]) < 0.1  # real scores higher


def test_haze_reads_as_unreal(fitted):
    model, critic = fitted
    fresh = textured(40, seed=8)
    with torch.no_grad():
        n = critic_map(critic, torch.from_numpy(fresh)[:, None]).mean((1, 2, 3)).numpy()
        h = critic_map(critic, torch.from_numpy(hazy(fresh))[:, None]).mean((1, 2, 3)).numpy()
    assert auroc(np.r_[np.zeros(40), np.ones(40)], np.r_[n, h]) > 0.9


def test_sum_is_normalised_on_held_out_normals(fitted):
    model, critic = fitted
    det = Detector(model, ScoringConfig(residual="ssim+critic", reduce="mean"), critic=critic)
    cal = textured(30, seed=9)
    with pytest.raises(UsageError, match="normal statistics"):
        det.model_maps(cal)
    det.calibrate(cal)
    assert set(det.component_stats) == {"ssim", "critic"}
    # the image-mean of the summed map is the sum of each part's z-score: ~0 mean over the same normals
    assert abs(float(det.model_maps(cal).mean())) < 1e-3
    parts = [(det._part_maps(cal, p, 64).mean((1, 2)) - m) / s for p, (m, s) in det.component_stats.items()]
    assert np.allclose(det.model_maps(cal).mean((1, 2)), sum(parts), atol=1e-4)


def test_critic_residual_needs_a_critic():
    imgs = normal_images(12, 32)
    with pytest.raises(UsageError, match="needs a critic"):
        fit_detector(imgs, "ae", 32, epochs=1, progress=False, scoring=ScoringConfig(residual="ssim+critic"),
                     model_config={"channels": [8, 16], "latent": 4})
    det = Detector(create_model("ae", image_size=32, channels=[8, 16], latent=4), ScoringConfig(residual="critic"))
    with pytest.raises(UsageError, match="needs a critic"):
        det.model_maps(imgs)
    with pytest.raises(UsageError, match="unknown residual"):
        ScoringConfig(residual="critic+critic")


def test_critic_fit_resumes_exactly(tmp_path):
    """A critic fit stopped after one epoch and rerun ends where an uninterrupted one does; its
    checkpoint holds the critic only, never the frozen reconstruction model."""
    imgs = normal_images(16, 32, seed=3)
    torch.manual_seed(0)
    model = create_model("ae", image_size=32, channels=[8, 16], latent=4)
    kw = dict(epochs=3, batch_size=8, progress=False, channels=(8, 16, 16), members=2)
    a = fit_critic(model, imgs, checkpoint=tmp_path / "a.ckpt", **kw)

    class Stop(Exception):
        pass

    def stop_after_first(line):
        if line.startswith("epoch 1/"):
            raise Stop

    with pytest.raises(Stop):
        fit_critic(model, imgs, checkpoint=tmp_path / "b.ckpt", log=stop_after_first, **kw)
    b = fit_critic(model, imgs, checkpoint=tmp_path / "b.ckpt", **kw)
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k
    saved = torch.load(tmp_path / "b.ckpt", weights_only=True)["model"]
    assert saved and all(k.startswith("critic.") for k in saved)
