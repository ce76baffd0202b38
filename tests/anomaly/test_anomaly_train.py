"""The fit loop: an interrupted and resumed fit ends exactly where an uninterrupted one does."""

import pytest
import torch
from anomaly_synth import normal_images

from anatomix.anomaly.models import create_model
from anatomix.anomaly.train import fit_model
from anatomix.errors import CheckpointError


class Stop(Exception):
    pass


@pytest.mark.parametrize("method,cfg", [("ae", {"channels": [8, 16], "latent": 8}),
                                        ("mae", {"patch": 8, "dim": 32, "depth": 1, "dec_depth": 1, "heads": 2,
                                                 "mem_slots": 4}),
                                        ("simsid", {"grid": 2, "channels": [8, 16], "memory_size": 8,
                                                    "shuffle_fraction": 0.5})])
def test_resume_is_exact(tmp_path, method, cfg):
    imgs = normal_images(24, 32, seed=2)
    torch.manual_seed(0)
    a = create_model(method, image_size=32, **cfg)
    fit_model(a, imgs, epochs=3, batch_size=8, checkpoint=tmp_path / "a.ckpt", progress=False)

    torch.manual_seed(0)
    b = create_model(method, image_size=32, **cfg)

    def stop_after_first(line):
        if line.startswith("epoch 1/"):
            raise Stop

    with pytest.raises(Stop):
        fit_model(b, imgs, epochs=3, batch_size=8, checkpoint=tmp_path / "b.ckpt", progress=False,
                  log=stop_after_first)
    c = create_model(method, image_size=32, **cfg)  # a fresh process would start from new weights
    hist = fit_model(c, imgs, epochs=3, batch_size=8, checkpoint=tmp_path / "b.ckpt", progress=False)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    for (k, v), (_, w) in zip(a.state_dict().items(), c.state_dict().items()):
        assert torch.equal(v, w), k


def test_checkpoint_from_other_settings_is_refused(tmp_path):
    imgs = normal_images(8, 32)
    m = create_model("ae", image_size=32, channels=[8, 16], latent=8)
    fit_model(m, imgs, epochs=1, batch_size=8, checkpoint=tmp_path / "c.ckpt", progress=False)
    with pytest.raises(CheckpointError, match="other settings"):
        fit_model(m, imgs, epochs=2, batch_size=8, checkpoint=tmp_path / "c.ckpt", progress=False)

