"""``anatomix segment`` through click's CliRunner, with a tiny untrained graph checkpoint.

The untrained model's contours are anatomically meaningless (often outside the image, so masks
may be empty); these tests check the plumbing: options, outputs, exit codes 0 / 1 / 2.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from anatomix.cli.segment import segment
from anatomix.io.chexmask import rle_decode


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    from anatomix.graphs.model import GraphConfig, HybridGNet

    torch.manual_seed(0)
    cfg = GraphConfig(image_size=64, latent_dim=8, encoder_channels=(4, 8), graph_channels=(8, 8),
                      cheb_k=2, n_skips=1)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save({"model": HybridGNet(cfg).state_dict(), "family": "graph", "graph_config": cfg.to_dict()}, path)
    return path


def images(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 64), dtype=np.uint8)).save(folder / f"cxr{i}.png")
    return folder


def run(*args):
    return CliRunner().invoke(segment, [str(a) for a in args], catch_exceptions=False)


def rows(out: Path) -> list[dict]:
    with open(out / "segmentations.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_all_good_exit_0_and_outputs(tmp_path, tiny_model):
    src, out = images(tmp_path / "in"), tmp_path / "out"
    r = run(src, "-o", out, "--model", tiny_model, "--batch-size", 2, "--workers", 1, "--no-qc",
            "--overlays", "--format", "png", "--format", "nifti", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "3 segmented" in r.output and "0 failed" in r.output
    table = rows(out)
    assert [t["image_id"] for t in table] == ["cxr0", "cxr1", "cxr2"]
    for t in table:
        h, w = int(t["Height"]), int(t["Width"])
        mask = np.asarray(Image.open(out / "masks" / f"{t['image_id']}_lungR.png"))
        assert mask.shape == (h, w) and np.array_equal(mask == 255, rle_decode(t["Right Lung"], h, w))
        assert (out / "masks" / f"{t['image_id']}_heart.nii.gz").is_file()
        assert (out / "overlays" / f"{t['image_id']}.png").is_file()
        assert len(t["Landmarks"]) > 100
    again = run(src, "-o", out, "--model", tiny_model, "--no-qc", "--format", "png", "--format", "nifti",
                "--overlays")
    assert again.exit_code == 0 and "0 segmented, 3 already done" in again.output


def test_some_failed_exit_1(tmp_path, tiny_model):
    src, out = images(tmp_path / "in", 2), tmp_path / "out"
    (src / "bad.png").write_bytes(b"not a png")
    import torch

    threads = torch.get_num_threads()
    try:
        r = run(src, tmp_path / "nothing-*.png", "-o", out, "--model", tiny_model, "--workers", 0, "--no-qc",
                "--threads", 1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 1, r.output
    assert "2 segmented" in r.output and "2 failed" in r.output
    with open(out / "errors.csv", newline="") as f:
        reasons = {Path(e["path"]).name: e["reason"] for e in csv.DictReader(f)}
    assert set(reasons) == {"bad.png", "nothing-*.png"}
    assert len(rows(out)) == 2


@pytest.mark.parametrize("args, message", [
    ([], "Missing argument"),
    (["{src}"], "Missing option"),
    (["{src}", "-o", "{out}", "--model", "no-such-model"], "unknown model"),
    (["{src}", "-o", "{out}", "--batch-size", "0"], "batch-size"),
    (["{src}", "-o", "{out}", "--workers", "-1"], "workers"),
    (["{src}", "-o", "{out}", "--format", "jpeg"], "format"),
    (["{src}", "-o", "{file}"], "is a file"),
    (["{empty}", "-o", "{out}"], "no radiographs found"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    src = images(tmp_path / "in", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    subst = {"src": src, "out": tmp_path / "out", "file": tmp_path / "afile", "empty": tmp_path / "empty"}
    r = run(*[a.format(**subst) for a in args])
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not (tmp_path / "out" / "segmentations.csv").exists()


def test_help_lists_the_options():
    r = run("--help")
    assert r.exit_code == 0
    for option in ("--model", "--device", "--batch-size", "--workers", "--format", "--overlays",
                   "--overwrite", "--no-qc", "errors.csv"):
        assert option in r.output
