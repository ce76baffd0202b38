"""``tools/graph_at_size.py``: a graph checkpoint carried to twice the input size."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "graph_at_size.py"


def _tool():
    spec = importlib.util.spec_from_file_location("graph_at_size", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_doubling_the_size_copies_all_but_the_new_deepest_stage():
    from anatomix.graphs.model import GraphConfig, HybridGNet

    torch.manual_seed(3)
    cfg = GraphConfig(image_size=64, encoder_channels=(8, 16, 16))  # the bundled model's case: the last width repeats
    small = HybridGNet(cfg)
    state = {"graph_config": small.cfg.to_dict(), "model": small.state_dict()}
    payload, new = _tool().carry_to_size(state, 128)

    n_stages = cfg.n_stages
    assert GraphConfig.from_dict(payload["graph_config"]).n_stages == n_stages + 1
    assert new and all(k.startswith(f"encoder.stages.{n_stages}.") for k in new)
    for k, v in small.state_dict().items():
        assert torch.equal(payload["model"][k], v), k
    big = HybridGNet(GraphConfig.from_dict(payload["graph_config"])).eval()
    big.load_state_dict(payload["model"])  # strict: the payload is what `anatomix train graph --init` reads
    assert big(torch.rand(1, 1, 128, 128)).landmarks.shape == (1, 120, 2)
