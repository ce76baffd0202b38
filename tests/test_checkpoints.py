"""Checkpoints never run code unless the user opts in; everything anatomix writes loads with
``torch.load(weights_only=True)``; old files convert."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from line_task import LineTask, line_data
from PIL import Image
from torch.utils.data import Dataset

from anatomix.errors import CheckpointError
from anatomix.models import REGISTRY, convert_checkpoint, load_checkpoint
from anatomix.training import TrainConfig, fit


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """(checkpoint whose unpickling creates a file, that file's path)."""
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"family": "graph", "model": {}, "graph_config": {}, "x": _Payload(marker)}, path)
    return path, marker


def _raw_safe_load(path: Path) -> dict:
    """What a stranger's tool does: plain weights_only=True, no allow-list."""
    return torch.load(path, map_location="cpu", weights_only=True)


# -- the payload -------------------------------------------------------------------------------
def test_payload_is_refused_by_every_python_loader(evil):
    from anatomix.anomaly.detector import Detector
    from anatomix.models import load_detector, load_segmenter

    path, marker = evil
    loaders = [load_checkpoint, load_segmenter, load_detector, Detector.load]
    for load in loaders:
        with pytest.raises(CheckpointError) as err:
            load(path)
        message = str(err.value)
        assert message.startswith(f"{path}: refused") and "\n" not in message, message
        assert "runs code from the file" in message and "io.open" in message
        assert not marker.exists(), load
    load_checkpoint(path, trust=True)  # the explicit opt-in really unpickles: the payload is real
    assert marker.exists()


def test_payload_is_refused_by_the_cli(evil, tmp_path):
    from anatomix.cli.main import cli

    path, marker = evil
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(tmp_path / "a.png")
    r = CliRunner().invoke(cli, ["segment", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"),
                                 "--model", str(path)])
    assert r.exit_code == 2, r.output
    reason = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(reason) == 1 and f"{path}: refused" in reason[0] and "--trust-checkpoint" in reason[0]
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_unreadable_file_is_one_line(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError, match=r"junk.pt: not a readable checkpoint") as err:
        load_checkpoint(tmp_path / "junk.pt")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")


# -- what anatomix writes ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(n for n in REGISTRY if REGISTRY.get(n).filename.endswith(".pt")))
def test_bundled_weights_load_with_weights_only(name):
    entry = REGISTRY.get(name)
    if not entry.available:
        pytest.skip(f"{entry.path} not bundled")
    assert isinstance(_raw_safe_load(entry.path), dict)


class _RealFamily:
    """A real segmenter family (model and checkpoint contents) with a tiny loss and metrics
    that come back as numpy scalars, as third-party metric code often returns them."""

    def __init__(self, task):
        self.task = task

    def build_model(self):
        return self.task.build_model()

    def loss(self, model, batch, epoch):
        out = model(batch["image"])
        loss = (out.landmarks if hasattr(out, "landmarks") else out).float().pow(2).mean()
        return loss, {"loss": loss.item()}

    def validate(self, model, loader):
        return {"score": np.float64(-len(loader)), "n": np.int64(3)}

    def checkpoint_extra(self):
        return self.task.checkpoint_extra()


class _Images(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"image": torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(i))}


def _families():
    from anatomix.graphs.model import GraphConfig
    from anatomix.graphs.train import GraphTask
    from anatomix.pixel.models import PixelConfig
    from anatomix.pixel.train import PixelTask

    graph = GraphTask(GraphConfig(image_size=32, latent_dim=4, encoder_channels=(4, 8), graph_channels=(8, 8),
                                  cheb_k=2, n_skips=1))
    pixel = PixelTask(PixelConfig(arch="monai_unet", image_size=32,
                                  kwargs={"channels": [4, 8], "num_res_units": 0}))
    return {"graph": graph, "pixel": pixel}


@pytest.mark.parametrize("family", ["graph", "pixel"])
def test_training_checkpoints_load_with_weights_only(family, tmp_path):
    from anatomix.models import load_segmenter

    cfg = TrainConfig(epochs=2, batch_size=2, val_every=1, threads=1)
    best = fit(_RealFamily(_families()[family]), _Images(), _Images(), cfg, tmp_path, progress=False)
    for path in (best, tmp_path / "last.pt"):
        state = _raw_safe_load(path)
        assert state["family"] == family and isinstance(state["metrics" if path == best else "best"], (dict, float))
    assert load_segmenter(str(best)).family == family


def test_detector_and_critic_checkpoints_load_with_weights_only(tmp_path):
    from anatomix.anomaly.detector import Detector
    from anatomix.anomaly.train import fit_detector

    imgs = np.random.default_rng(0).random((8, 32, 32), dtype=np.float32)
    det = fit_detector(imgs, "ae", 32, epochs=1, batch_size=4, checkpoint=tmp_path / "m.ckpt", progress=False,
                       critic_epochs=1)
    det.save(tmp_path / "det.pt")
    for name in ("m.ckpt", "m.critic.ckpt", "det.pt"):
        assert isinstance(_raw_safe_load(tmp_path / name), dict), name
    assert Detector.load(tmp_path / "det.pt").calibration == det.calibration


# -- older files ---------------------------------------------------------------------------------
def _to_old_format(path: Path) -> None:
    """Rewrite a last.pt as versions before plain types wrote it: numpy's RNG state tuple and
    numpy scalars (it then needs the numpy allow-list; a raw weights_only load refuses it)."""
    state = torch.load(path, weights_only=True)
    rng = state["numpy_rng"]
    state["numpy_rng"] = (rng["bit_generator"], rng["key"].numpy(), rng["pos"], rng["has_gauss"], rng["gauss"])
    state["best"] = np.float64(state["best"])
    torch.save(state, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        _raw_safe_load(path)


def test_old_last_pt_resumes_safely_and_identically(tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.05, val_every=1)
    fit(LineTask(), line_data(32), line_data(32), cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        fit(LineTask(crash_at_epoch=2), line_data(32), line_data(32), cfg, tmp_path / "old", progress=False)
    _to_old_format(tmp_path / "old" / "last.pt")
    fit(LineTask(), line_data(32), line_data(32), cfg, tmp_path / "old", progress=False)
    a, b = (_raw_safe_load(tmp_path / d / "last.pt") for d in ("full", "old"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["numpy_rng"]["key"], b["numpy_rng"]["key"])


def test_convert_needs_trust_only_for_files_that_need_it(tmp_path):
    from anatomix.cli.main import cli

    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save({"model": weights, "rng": np.arange(4, dtype=np.uint32), "score": np.float32(0.5)}, tmp_path / "np.pt")
    assert convert_checkpoint(tmp_path / "np.pt", tmp_path / "np2.pt") == 2  # safe via the numpy allow-list
    assert _raw_safe_load(tmp_path / "np2.pt")["score"] == 0.5
    torch.save({"model": weights, "where": Path("/data/run")}, tmp_path / "path.pt")  # needs pathlib
    runner = CliRunner()
    r = runner.invoke(cli, ["convert-checkpoint", str(tmp_path / "path.pt"), str(tmp_path / "new.pt")])
    assert r.exit_code == 2 and "refused" in r.output and not (tmp_path / "new.pt").exists()
    r = runner.invoke(cli, ["convert-checkpoint", str(tmp_path / "path.pt"), str(tmp_path / "new.pt"),
                            "--trust-checkpoint"])
    assert r.exit_code == 0, r.output
    new = _raw_safe_load(tmp_path / "new.pt")
    assert new["where"] == "/data/run" and torch.equal(new["model"]["w"], weights["w"])
