"""Every reconstruction method: right shapes, a deterministic map, and it overfits a tiny set
(``rd`` rebuilds features, not images: tests/anomaly/test_anomaly_rd.py)."""

import pytest
import torch
from anomaly_synth import normal_images, with_blob

from anatomix.anomaly.models import MODELS, create_model
from anatomix.errors import UsageError

TINY = {
    "ae": {"channels": [8, 16], "latent": 8},
    "memae": {"channels": [8, 16], "dim": 16, "mem_size": 32},
    "mae": {"patch": 8, "dim": 32, "depth": 2, "dec_depth": 1, "heads": 2, "mem_slots": 4},
    "squid": {"grid": 2, "channels": [8, 16], "queue_size": 8},
    "simsid": {"grid": 2, "channels": [8, 16], "memory_size": 8, "shuffle_fraction": 0.5},
}


def test_factory_lists_names():
    with pytest.raises(UsageError, match="ae"):
        create_model("nope", image_size=32)
    assert set(TINY) | {"rd"} == set(MODELS)


@pytest.mark.parametrize("method", sorted(TINY))
def test_shapes_and_determinism(method):
    torch.manual_seed(0)
    m = create_model(method, image_size=32, **TINY[method]).eval()
    x = torch.from_numpy(normal_images(3, 32))[:, None]
    with torch.no_grad():
        a, b = m.anomaly_map(x), m.anomaly_map(x)
        for r in ("l2", "l1", "ssim", "l2+ssim"):
            assert m.anomaly_map(x, r).shape == (3, 1, 32, 32)
    assert a.shape == (3, 1, 32, 32) and m.reconstruct(x).shape == (3, 1, 32, 32)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all() and (a >= 0).all()


@pytest.mark.parametrize("method", sorted(TINY))
def test_overfits_tiny_set(method):
    torch.manual_seed(0)
    m = create_model(method, image_size=32, **TINY[method])
    x = torch.from_numpy(normal_images(4, 32, seed=1))[:, None]
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)

    def recon_mse():
        m.eval()
        with torch.no_grad():
            return float(((m.reconstruct(x) - x) ** 2).mean())

    before = recon_mse()
    for _ in range(200):
        m.train()
        loss, _ = m.training_loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = recon_mse()
    assert after < 0.25 * before, (before, after)
    assert after < 0.01
    # the memorised normals are reconstructed better than the same image with an opacity
    blob = torch.from_numpy(with_blob(x[0, 0].numpy()))[None, None]
    m.eval()
    with torch.no_grad():
        assert float(m.anomaly_map(blob, "l2").mean()) > float(m.anomaly_map(x[:1], "l2").mean())
