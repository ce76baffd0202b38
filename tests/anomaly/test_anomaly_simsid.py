"""``simsid``: shuffled-patch training input and the learned space-aware memory."""

import pytest
import torch
from anomaly_synth import normal_images

from anatomix.anomaly.models import create_model
from anatomix.errors import UsageError


def _patches(x, g):
    b, _, s, _ = x.shape
    p = s // g
    return x.reshape(b, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(b, g * g, p * p)


def test_shuffle_moves_whole_patches_and_keeps_them():
    m = create_model("simsid", image_size=32, grid=4, channels=[8], memory_size=4, shuffle_fraction=0.5)
    x = torch.rand(3, 1, 32, 32)
    torch.manual_seed(0)
    y = m.shuffle_patches(x)
    assert y.shape == x.shape and not torch.equal(x, y)
    px, py = _patches(x, 4), _patches(y, 4)
    for i in range(3):
        moved = (px[i] != py[i]).any(1)
        assert 2 <= int(moved.sum()) <= 8  # at most half of the 16 patches change place
        # the film's patches are the same set, only at other positions
        assert sorted(map(tuple, px[i].tolist())) == sorted(map(tuple, py[i].tolist()))


def test_no_shuffle_is_identity_and_bad_fraction_refused():
    m = create_model("simsid", image_size=32, grid=4, channels=[8], memory_size=4, shuffle_fraction=0.0)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(m.shuffle_patches(x), x)
    with pytest.raises(UsageError, match="shuffle_fraction"):
        create_model("simsid", image_size=32, grid=4, channels=[8], shuffle_fraction=1.5)


def test_memory_is_learned_not_a_queue():
    torch.manual_seed(0)
    m = create_model("simsid", image_size=32, grid=2, channels=[8, 16], memory_size=8)
    assert "memory" in dict(m.named_parameters()) and "queue" not in m.state_dict()
    assert m.memory.shape == (4 * 4 * 4, 8, 16)  # (grid * f)^2 positions, f = 16 / 2**2 = 4
    x = torch.from_numpy(normal_images(4, 32))[:, None]
    loss, _ = m.training_loss(x)
    loss.backward()
    assert m.memory.grad is not None and float(m.memory.grad.abs().sum()) > 0
    before = m.memory.detach().clone()
    m.eval()
    with torch.no_grad():
        m.anomaly_map(x)
    assert torch.equal(m.memory.detach(), before)  # scoring never writes to the memory
    assert set(m.config) >= {"memory_size", "shuffle_fraction"} and "queue_size" not in m.config
