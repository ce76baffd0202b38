"""The shared training loop: logs, best checkpoint, exact resume."""

import csv

import pytest
import torch
from torch.utils.data import TensorDataset

from anatomix.training import TrainConfig, fit


class _LineTask:
    """y = 3x - 1 regression: small enough to check the loop's bookkeeping."""

    def __init__(self, crash_at_epoch=None):
        self.crash_at_epoch = crash_at_epoch

    def build_model(self):
        return torch.nn.Linear(1, 1)

    def loss(self, model, batch, epoch):
        if epoch == self.crash_at_epoch:
            raise KeyboardInterrupt("killed")
        x, y = batch
        loss = torch.nn.functional.mse_loss(model(x), y)
        return loss, {"loss": loss.item()}

    def validate(self, model, loader):
        err = sum(float(torch.nn.functional.mse_loss(model(x), y)) for x, y in loader)
        return {"mse": err, "score": -err}

    def checkpoint_extra(self):
        return {"family": "line"}


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=g)
    return TensorDataset(x, 3 * x - 1)


def test_fit_learns_and_logs(tmp_path):
    cfg = TrainConfig(epochs=30, batch_size=8, lr=0.05, val_every=10)
    best = fit(_LineTask(), _data(), _data(16), cfg, tmp_path, progress=False)
    state = torch.load(best, weights_only=True)
    assert state["family"] == "line" and state["metrics"]["mse"] < 0.05
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 31))
    assert rows[9]["val_mse"] != "" and rows[0]["val_mse"] == ""


def test_resume_matches_uninterrupted_run(tmp_path):
    cfg = TrainConfig(epochs=6, batch_size=8, lr=0.05, val_every=2)
    fit(_LineTask(), _data(), _data(16), cfg, tmp_path / "full", progress=False)
    # the same run, killed during its 4th epoch and started again
    with pytest.raises(KeyboardInterrupt):
        fit(_LineTask(crash_at_epoch=3), _data(), _data(16), cfg, tmp_path / "resumed", progress=False)
    fit(_LineTask(), _data(), _data(16), cfg, tmp_path / "resumed", progress=False)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k])
