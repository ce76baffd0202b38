"""The shared training loop: logs, best checkpoint, exact resume."""

import csv

import pytest
import torch
from line_task import LineTask, line_data

from anatomix.training import TrainConfig, fit


def test_fit_learns_and_logs(tmp_path):
    cfg = TrainConfig(epochs=30, batch_size=8, lr=0.05, val_every=10)
    best = fit(LineTask(), line_data(), line_data(16), cfg, tmp_path, progress=False)
    state = torch.load(best, weights_only=True)
    assert state["family"] == "line" and state["metrics"]["mse"] < 0.05
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 31))
    assert rows[9]["val_mse"] != "" and rows[0]["val_mse"] == ""


def test_resume_matches_uninterrupted_run(tmp_path):
    cfg = TrainConfig(epochs=6, batch_size=8, lr=0.05, val_every=2)
    fit(LineTask(), line_data(), line_data(16), cfg, tmp_path / "full", progress=False)
    # the same run, killed during its 4th epoch and started again
    with pytest.raises(KeyboardInterrupt):
        fit(LineTask(crash_at_epoch=3), line_data(), line_data(16), cfg, tmp_path / "resumed", progress=False)
    fit(LineTask(), line_data(), line_data(16), cfg, tmp_path / "resumed", progress=False)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k])


def test_to_device_moves_every_tensor_and_keeps_the_rest():
    from anatomix.training import to_device

    batch = {"image": torch.zeros(2, 1, 4, 4), "index": [torch.tensor(1), "id"], "pair": (torch.ones(1), 3)}
    moved = to_device(batch, torch.device("meta"))
    assert moved["image"].device.type == "meta" and moved["index"][0].device.type == "meta"
    assert moved["index"][1] == "id" and moved["pair"][1] == 3 and isinstance(moved["pair"], tuple)
