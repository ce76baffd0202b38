"""``anatomix train`` over two labelled folders of the pack's layout: one with landmarks,
lungs and heart (like cxr-seg), one with lung masks only (like cxr-lungs)."""

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from anatomix.anatomy import LUNGS_HEART, masks_to_landmarks
from anatomix.cli.train import train

SIZE = 64
SHAPES = {"lungR": (20, 28, 11, 16), "lungL": (44, 28, 11, 16), "heart": (36, 42, 10, 8)}


def _masks(i: int) -> dict:
    """Ellipse masks (cx, cy, rx, ry), jittered per case, in a 64 x 64 image."""
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    return {k: ((xx - cx - i % 3) / rx) ** 2 + ((yy - cy - i % 2) / ry) ** 2 < 1
            for k, (cx, cy, rx, ry) in SHAPES.items()}


def _write_folder(root, source: str, n: int, with_heart: bool, border: int = 0):
    """A manifest folder: ``manifest.csv`` + ``<source>/<id>.png`` and masks (+ landmarks)."""
    (root / source).mkdir(parents=True)
    rows = []
    for i in range(n):
        cid = f"{source}{i}"
        m = _masks(i)
        image = 70 + 40 * np.random.default_rng(i).random((SIZE, SIZE))
        image[m["lungR"] | m["lungL"]] -= 50
        image[m["heart"]] += 80
        if border:  # a black band under the chest, as on Montgomery films
            image = np.vstack([image, np.zeros((border, SIZE))])
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / source / f"{cid}.png")
        for k in (LUNGS_HEART.keys if with_heart else ("lungR", "lungL")):
            mask = np.vstack([m[k], np.zeros((border, SIZE), bool)]) if border else m[k]
            Image.fromarray(mask.astype(np.uint8)).save(root / source / f"{cid}_{k}.png")
        if with_heart:
            np.save(root / source / f"{cid}_landmarks.npy", masks_to_landmarks(m).astype(np.float32))
        rows.append({"id": cid, "source": source, "patient_id": cid, "label": "normal"})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture()
def folders(tmp_path):
    return (_write_folder(tmp_path / "seg", "jsrt", 6, with_heart=True),
            _write_folder(tmp_path / "lungs", "montgomery", 6, with_heart=False, border=24))


def _run(args):
    r = CliRunner().invoke(train, args)
    assert r.exit_code == 0, r.output
    return r


def test_graph_trains_on_both_folders(folders, tmp_path):
    seg, lungs = folders
    out = tmp_path / "graph"
    r = _run(["graph", "--data", str(seg), "--data", str(lungs), "-o", str(out), "--epochs", "2",
              "--batch-size", "4", "--image-size", "64", "--encoder-channels", "4,8,8",
              "--graph-channels", "8,8,8,8", "--latent-dim", "8", "--val-fraction", "0.34",
              "--val-every", "1", "--threads", "1"])
    assert "jsrt: 4 train / 2 val; montgomery: 4 train / 2 val" in r.output
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 2
    row = rows[-1]
    # landmark and mask terms both ran; the lungs-only source is scored on lungs only
    assert float(row["train_mse"]) > 0 and float(row["train_boundary"]) > 0
    assert "val_dice_montgomery_lungR" in row and "val_dice_montgomery_heart" not in row
    assert "val_dice_jsrt_heart" in row
    state = torch.load(out / "best.pt", weights_only=True)
    assert state["graph_config"]["crop_borders"] is True
    split = json.loads((out / "split.json").read_text())
    assert len(split["train"]) == 8 and len(split["val"]) == 4


def test_pixel_trains_on_both_folders(folders, tmp_path):
    seg, lungs = folders
    out = tmp_path / "pixel"
    _run(["pixel", "--data", str(seg), "--data", str(lungs), "-o", str(out), "--epochs", "1",
          "--batch-size", "4", "--image-size", "32", "--channels", "4,8", "--res-units", "0",
          "--val-fraction", "0.34", "--val-every", "1", "--threads", "1", "--no-balance"])
    row = list(csv.DictReader(open(out / "log.csv")))[-1]
    assert "val_dice_montgomery_lungL" in row and "val_dice_montgomery_heart" not in row
    assert torch.load(out / "best.pt", weights_only=True)["pixel_config"]["crop_borders"] is True


def test_training_seed_leaves_the_split_alone(folders, tmp_path):
    """Ensemble members trained with other --seed values hold out the same validation cases."""
    seg, lungs = folders
    splits = {}
    for name, seeds in {"a": ("0", "0"), "b": ("5", "0"), "c": ("0", "5")}.items():
        out = tmp_path / name
        _run(["pixel", "--data", str(seg), "--data", str(lungs), "-o", str(out), "--epochs", "1",
              "--batch-size", "4", "--image-size", "32", "--channels", "4,8", "--res-units", "0",
              "--val-fraction", "0.5", "--val-every", "1", "--threads", "1",
              "--seed", seeds[0], "--split-seed", seeds[1]])
        splits[name] = json.loads((out / "split.json").read_text())["val"]
    assert splits["a"] == splits["b"]
    assert splits["a"] != splits["c"]


def test_unknown_device_is_refused_before_training(folders, tmp_path):
    seg, _ = folders
    r = CliRunner().invoke(train, ["pixel", "--data", str(seg), "-o", str(tmp_path / "run"), "--device", "gpu7"])
    assert r.exit_code == 2 and "--device" in r.output
    assert not (tmp_path / "run").exists()
