"""``anatomix train pixel`` on a tiny labelled folder: runs, resumes, rejects unknown archs."""

import csv

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from anatomix.cli.train import train


def _folder(tmp_path, n=6, size=48):
    d = tmp_path / "cases"
    d.mkdir()
    yy, xx = np.mgrid[:size, :size] + 0.5
    for i in range(n):
        discs = {k: ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)
                 for k, (cx, cy, r) in {"lungR": (14 + i % 2, 22, 9), "lungL": (34, 22 + i % 3, 9),
                                        "heart": (26, 30, 7)}.items()}
        image = 40 + 120 * discs["lungR"] + 120 * discs["lungL"] + 60 * discs["heart"]
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(d / f"case{i}.png")
        for k, m in discs.items():
            Image.fromarray(m.astype(np.uint8)).save(d / f"case{i}_{k}.png")
    return d


def test_train_pixel_runs_and_resumes(tmp_path):
    data, out = _folder(tmp_path), tmp_path / "run"
    args = ["pixel", "--data", str(data), "-o", str(out), "--epochs", "2", "--batch-size", "2",
            "--image-size", "32", "--channels", "4,8", "--res-units", "0", "--val-every", "1", "--threads", "1"]
    r = CliRunner().invoke(train, args)
    assert r.exit_code == 0, r.output
    state = torch.load(out / "best.pt", weights_only=True)
    assert state["family"] == "pixel" and state["pixel_config"]["image_size"] == 32
    assert (out / "split.json").is_file()
    # a rerun with more epochs continues from last.pt
    args[args.index("--epochs") + 1] = "3"
    r = CliRunner().invoke(train, args)
    assert r.exit_code == 0, r.output
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(x["epoch"]) for x in rows] == [1, 2, 3]
    assert "val_dice_heart" in rows[0]


def test_unknown_arch_lists_names(tmp_path):
    r = CliRunner().invoke(train, ["pixel", "--data", str(_folder(tmp_path)), "-o", str(tmp_path / "r"),
                                   "--arch", "nope"])
    assert r.exit_code != 0 and "monai_unet" in r.output
