"""MONAI Bundle export: the bundle runs through MONAI's own bundle tools and gives anatomix's
results (landmarks within 1e-4 px, masks equal; anomaly scores and verdicts equal), and the
exported graph network equals the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anatomix.export import load_spec
from anatomix.export.bundle import REQUIRED_METADATA, export_bundle
from anatomix.io import read_radiograph
from anatomix.models import load_segmenter

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"


def test_exported_graph_network_equals_the_model():
    seg = load_segmenter("graph")
    net, _ = load_spec("graph").networks["model"]
    x = torch.from_numpy(np.random.default_rng(0).random((3, 1, seg.size, seg.size), dtype=np.float32))
    with torch.no_grad():
        ref, got = seg.model(x).landmarks, net(x)
    assert got.shape == ref.shape
    assert float((ref - got).abs().max()) * seg.size < 1e-3  # model-frame pixels; float rounding only
    assert set(net.state_dict()) == {f"net.{k}" for k in seg.model.state_dict()}


@pytest.fixture(scope="module", params=["graph", "pixel", "anomaly"])
def bundle(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"bundle_{request.param}")
    export_bundle(load_spec(request.param), out)
    return request.param, out


def test_layout_and_metadata(bundle):
    name, out = bundle
    for f in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md",
              "docs/license.txt"):
        assert (out / f).is_file(), f
    meta = json.loads((out / "configs/metadata.json").read_text())
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    assert not missing
    for side in ("inputs", "outputs"):
        for spec in meta["network_data_format"][side].values():
            for key in ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range"):
                assert key in spec, (side, key)
    assert ("CC BY 4.0" if name == "anomaly" else "JSRT") in meta["data_source"]
    assert "research" in meta["data_source"].lower()
    assert meta["network_data_format"]["inputs"]["image"]["value_range"] == [0, 1]
    card = (Path(load_spec(name).source).with_suffix(".md"))
    assert (out / "docs/README.md").read_text() == card.read_text()
    state = torch.load(out / "models/model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_verify_net_in_out(bundle):
    from monai.bundle import verify_net_in_out

    _, out = bundle
    verify_net_in_out(net_id="network_def", meta_file=str(out / "configs/metadata.json"),
                      config_file=str(out / "configs/inference.json"), device="cpu")


def _check_outputs(name: str, folder: Path, images: list[Path]):
    if name == "anomaly":
        from anatomix.anomaly import Detector
        from anatomix.models import resolve

        det = Detector.load(resolve("anomaly"))
        for path in images:
            record = json.loads((folder / f"{path.stem}.json").read_text())
            ref = det.score([read_radiograph(path)])[0]
            assert abs(record["score"] - ref.score) < 1e-6 and record["anomalous"] == ref.anomalous, path.name
            assert record["regions"].keys() == ref.regions.keys()
        return
    seg = load_segmenter(name)
    for path in images:
        record = json.loads((folder / f"{path.stem}.json").read_text())
        ref = seg.predict([read_radiograph(path)])[0]
        lm = np.asarray(record["landmarks"], dtype=np.float64)
        both = np.isfinite(ref.landmarks) & np.isfinite(lm)
        assert np.array_equal(np.isfinite(ref.landmarks), np.isfinite(lm))
        assert np.abs(lm[both] - ref.landmarks[both]).max() < 1e-4, path.name
        for k, m in ref.masks.items():
            assert np.array_equal(np.asarray(Image.open(folder / f"{path.stem}_{k}.png")) > 0, m), (path.name, k)


def test_config_parser_run_matches_anatomix(bundle, tmp_path):
    from monai.bundle import ConfigParser

    name, out = bundle
    parser = ConfigParser()
    parser.read_config(str(out / "configs/inference.json"))
    parser.read_meta(str(out / "configs/metadata.json"))
    parser["bundle_root"], parser["dataset_dir"], parser["output_dir"] = str(out), str(EXAMPLES), str(tmp_path)
    parser.get_parsed_content("initialize")
    results = parser.get_parsed_content("run")[0]
    images = sorted(EXAMPLES.glob("*.png"))
    assert sorted(r["image_id"] for r in results) == [p.stem for p in images]
    _check_outputs(name, tmp_path, images)


def test_monai_bundle_runner(bundle, tmp_path):
    pytest.importorskip("fire", reason="`python -m monai.bundle` needs fire (pip install 'monai[fire]')")
    name, out = bundle
    data = tmp_path / "data"
    data.mkdir()
    image = min(EXAMPLES.glob("*.png"))
    (data / image.name).write_bytes(image.read_bytes())
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(out / "configs/inference.json"),
           "--meta_file", str(out / "configs/metadata.json"), "--bundle_root", str(out),
           "--dataset_dir", str(data), "--output_dir", str(tmp_path / "eval")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _check_outputs(name, tmp_path / "eval", [data / image.name])


def test_no_bundle_for_a_refined_model(tmp_path):
    from click.testing import CliRunner

    from anatomix.cli.export import export
    from anatomix.refine import save_refined

    save_refined(tmp_path / "refined.pt", "graph", "pixel")
    result = CliRunner().invoke(export, [str(tmp_path / "refined.pt"), "--format", "bundle", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "use --format onnx" in result.output
