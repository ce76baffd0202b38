"""HybridGNet: graph pyramid, model shapes and invariances, loss, overfitting, save/load."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from anatomix.anatomy import TEMPLATES
from anatomix.errors import UsageError
from anatomix.graphs.loss import hybrid_loss, kl_divergence, targets_for_levels
from anatomix.graphs.model import (
    FixedGraphChebConv,
    GraphConfig,
    HybridGNet,
    PositionHead,
    scaled_laplacian,
    sparse_propagation,
)
from anatomix.graphs.pooling import GraphPyramid, pyramid

S = 64
TINY = {"image_size": S, "latent_dim": 16, "encoder_channels": (8, 16, 32), "graph_channels": (16, 16, 16, 16),
        "cheb_k": 3}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: the tests share two cores with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(template: str = "lungs_heart", seed: int = 0, untrained: bool = False, **kw) -> HybridGNet:
    """A tiny model; unless ``untrained``, its position heads get 10 % of the default random
    weights (instead of 1 %), so that, as after training, the output visibly depends on the image
    and on z, not only on the offsets."""
    torch.manual_seed(seed)
    model = HybridGNet(GraphConfig(template=template, **{**TINY, **kw}))
    if not untrained:
        for m in model.modules():
            if isinstance(m, PositionHead):
                m.conv.reset_parameters()
                with torch.no_grad():
                    for lin in m.conv.lins:
                        lin.weight.mul_(0.1)
    return model


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int) -> torch.Tensor:
    t = torch.arange(n) * 2 * math.pi / n
    return torch.stack([cx + rx * torch.cos(t), cy + ry * torch.sin(t)], 1)


def synthetic(n_images: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of two 'lungs' and a 'heart' (filled ellipses) whose nodes move with the image.

    Returns:
        images (n, 1, size, size) in [0, 1] and normalised (n, 120, 2) nodes on the ellipses.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    images, targets = [], []
    for _ in range(n_images):
        r = torch.rand(7, generator=g).tolist()
        cy = 0.4 + 0.2 * r[0]
        shapes = [(0.25 + 0.1 * r[1], cy, 0.08 + 0.06 * r[2], 0.2 + 0.05 * r[6], 44),
                  (0.75 - 0.1 * r[3], cy, 0.08 + 0.06 * r[4], 0.2, 50),
                  (0.45 + 0.1 * r[5], cy + 0.2, 0.12, 0.07, 26)]
        img, nodes = torch.zeros(size, size), []
        for cx, cy_, rx, ry, n in shapes:
            img += 0.5 * ((((xx / size - cx) / rx) ** 2 + ((yy / size - cy_) / ry) ** 2) <= 1).float()
            nodes.append(ellipse(cx, cy_, rx, ry, n))
        images.append(img.clamp(0, 1))
        targets.append(torch.cat(nodes))
    return torch.stack(images)[:, None], torch.stack(targets)


# -- pooling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, counts", [("lungs_heart", (120, 60, 31, 17)), ("full", (166, 84, 43, 23))])
def test_pyramid_levels_and_ring_edges(name: str, counts: tuple[int, ...]) -> None:
    pyr = pyramid(name, 4)
    assert pyr.n_nodes == counts
    for level, n in enumerate(counts):
        ei = pyr.edge_index(level).numpy()
        assert ei.shape == (2, 2 * n)
        assert np.bincount(ei[0], minlength=n).tolist() == [2] * n  # a ring: degree 2 everywhere
        # edges stay inside structures
        starts = np.cumsum([0] + [s.count for s in pyr.templates[level].structures])
        assert np.array_equal(np.searchsorted(starts, ei[0], "right"), np.searchsorted(starts, ei[1], "right"))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_down_up_is_identity_and_up_interpolates(name: str) -> None:
    pyr = pyramid(name, 4)
    for level in range(pyr.n_levels - 1):
        down, up = pyr.down[level], pyr.up[level]
        assert np.allclose(down @ up, np.eye(down.shape[0]))
        assert np.allclose(up.sum(axis=1), 1.0)  # rows are interpolation weights
    # a signal linear along a ring is reproduced by upsampling away from the closing edge
    ring = np.arange(8, dtype=np.float32)[:, None]
    up = GraphPyramid.build(TEMPLATES.get(name), 2).up[0][:8, :4]
    assert np.allclose((up @ ring[::2])[:7], ring[:7])


def test_downsample_matches_selection_matrices() -> None:
    pyr = pyramid("full", 4)
    x = torch.randn(2, 166, 3)
    for level in range(1, 4):
        expect = x.numpy()
        for d in pyr.down[:level]:
            expect = d @ expect
        assert torch.allclose(pyr.downsample(x, level), torch.from_numpy(expect))


def test_too_many_levels_raise() -> None:
    with pytest.raises(ValueError, match="ring"):
        GraphPyramid.build(TEMPLATES.get("full"), 5)


# -- config --------------------------------------------------------------------------------------
def test_config_roundtrip_and_validation() -> None:
    cfg = GraphConfig(template="full", image_size=512)
    assert GraphConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.n_stages == 6 and cfg.bottom_size == 8 and cfg.stage_channels[-1] == 128
    assert GraphConfig(image_size=1024).n_stages == 7
    with pytest.raises(UsageError, match="template .lungs.; choose from: lungs_heart, full"):
        GraphConfig(template="lungs")
    with pytest.raises(ValueError, match="image_size"):
        GraphConfig(image_size=100)
    with pytest.raises(ValueError, match="unknown GraphConfig keys"):
        GraphConfig.from_dict({"templat": "full"})


# -- model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("template, n", [("lungs_heart", 120), ("full", 166)])
def test_output_shapes_and_ranges(template: str, n: int) -> None:
    model = tiny(template)
    out = model(torch.rand(3, 1, S, S))
    assert out.landmarks.shape == (3, n, 2) and torch.isfinite(out.landmarks).all()
    assert out.levels == (1, 0) and out.template == template
    assert [p.shape for p in out.intermediate] == [(3, model.pyramid.n_nodes[1], 2), (3, n, 2)]
    assert all(((p >= 0) & (p <= 1)).all() for p in out.intermediate)
    assert out.mu.shape == out.logvar.shape == (3, 16)
    with pytest.raises(ValueError, match="expected images"):
        model(torch.rand(3, 1, 32, 32))


@pytest.mark.parametrize("size, stages", [(512, 6), (1024, 7)])
def test_encoder_depth_adapts_to_large_images(size: int, stages: int) -> None:
    model = tiny("full", image_size=size, encoder_channels=(4, 8, 16)).eval()
    assert len(model.encoder.stages) == stages
    with torch.no_grad():
        out = model(torch.rand(1, 1, size, size))
    assert out.landmarks.shape == (1, 166, 2)


def test_default_model_at_256_is_small() -> None:
    model = HybridGNet(GraphConfig())
    mib = sum(p.numel() for p in model.parameters()) * 4 / 2 ** 20
    assert 2 < mib < 25
    assert "template='lungs_heart'" in repr(model)


def test_eval_is_deterministic_and_train_is_stochastic() -> None:
    model = tiny()
    x = torch.rand(2, 1, S, S)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).landmarks, model(x).landmarks)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x).landmarks, model(x).landmarks)


def test_batch_independence_in_eval() -> None:
    model = tiny("full").eval()
    x = torch.rand(5, 1, S, S)
    with torch.no_grad():
        alone = model(x[:1])
        batch = model(x)
    assert torch.allclose(alone.landmarks, batch.landmarks[:1], atol=1e-5)
    assert torch.allclose(alone.mu, batch.mu[:1], atol=1e-5)


def test_sample_shape_and_spread() -> None:
    model = tiny().eval()
    with torch.no_grad():
        model.encoder.fc_logvar.bias.fill_(0.0)  # sigma ~ 1, as at the start of training
        draws = model.sample(torch.rand(2, 1, S, S), 7, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (7, 2, 120, 2)
    assert (draws.std(dim=0) > 0).all()


def test_mean_and_samples_equal_forward_and_per_image_sample() -> None:
    """One encoder pass gives forward's landmarks exactly and, per image, the draws that sample()
    makes of that image alone with a generator seeded the same (whatever the batch)."""
    model = tiny().eval()
    with torch.no_grad():
        model.encoder.fc_logvar.bias.fill_(0.0)
        x = torch.rand(3, 1, S, S)
        mean, draws = model.mean_and_samples(x, 5, seed=4)
        assert torch.equal(mean, model(x).landmarks)
        assert draws.shape == (5, 3, 120, 2) and (draws.std(dim=0) > 0).all()
        for i in range(3):
            alone = model.sample(x[i:i + 1], 5, generator=torch.Generator().manual_seed(4))[:, 0]
            torch.testing.assert_close(draws[:, i], alone, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(draws[:, 0], model.mean_and_samples(x[:1], 5, seed=5)[1][:, 0])


def test_reset_parameters_restores_the_initial_state() -> None:
    model = tiny().eval()
    x = torch.rand(1, 1, S, S)

    def near_offsets() -> bool:  # every position within 0.05 of its initial offset 0.5
        with torch.no_grad():
            out = model(x)
        return all(torch.allclose(p, torch.full_like(p, 0.5), atol=0.05) for p in [out.landmarks, *out.intermediate])

    assert not near_offsets()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    model.reset_parameters()
    assert near_offsets()
    assert model(x).landmarks.std() > 0  # still image-dependent


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_fixed_graph_chebconv_equals_torch_geometric(k: int) -> None:
    """The dense layer computes torch_geometric's ChebConv on every level of the template's
    pyramid (same parameters, outputs and gradients to float rounding), and so does its sparse
    baseline."""
    from torch_geometric.nn import ChebConv

    pyr = pyramid("lungs_heart", 4)
    for level in range(4):
        edges, n = pyr.edge_index(level), pyr.n_nodes[level]
        torch.manual_seed(level)
        ref, dense = ChebConv(5, 7, k), FixedGraphChebConv(5, 7, k)
        torch.nn.init.normal_(ref.bias)  # a bias that is not zero, to be compared too
        dense.load_state_dict(ref.state_dict())
        x = torch.randn(3, n, 5, requires_grad=True)
        want = ref(x, edges)
        lap = scaled_laplacian(edges, n)
        got = dense(x, lap)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dense.sparse_forward(x, lap), want, rtol=1e-5, atol=1e-5)
        with sparse_propagation():
            torch.testing.assert_close(dense(x, lap), want, rtol=1e-5, atol=1e-5)
        assert FixedGraphChebConv.forward is FixedGraphChebConv.dense_forward
        (g_want,) = torch.autograd.grad(want.square().sum(), x)
        (g_got,) = torch.autograd.grad(got.square().sum(), x)
        torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-4)


def test_scaled_laplacian_of_a_ring() -> None:
    """On a ring every node has degree 2: L_hat = -A / 2 (zero diagonal, -1/2 to each neighbour)."""
    n = 6
    src = torch.arange(n)
    edges = torch.stack([torch.cat([src, (src + 1) % n]), torch.cat([(src + 1) % n, src])])
    lap = scaled_laplacian(edges, n)
    want = torch.zeros(n, n)
    want[src, (src + 1) % n] = want[(src + 1) % n, src] = -0.5
    torch.testing.assert_close(lap, want)


def test_state_dict_and_config_roundtrip() -> None:
    model = tiny("full", cheb_k=2).eval()
    buf = io.BytesIO()
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    again = HybridGNet(GraphConfig.from_dict(ckpt["config"])).eval()
    again.load_state_dict(ckpt["state_dict"])
    x = torch.rand(2, 1, S, S)
    with torch.no_grad():
        assert torch.equal(model(x).landmarks, again(x).landmarks)


# -- loss ----------------------------------------------------------------------------------------
def test_loss_parts_and_level_targets() -> None:
    model = tiny()
    x, target = synthetic(2, S)
    out = model(x)
    levels = targets_for_levels(target, out)
    assert [t.shape for t in levels] == [p.shape for p in out.intermediate]
    assert torch.equal(levels[1], target)  # level 0 is the template itself
    assert torch.equal(levels[0], target[:, model.pyramid.node_index(1)])
    loss, parts = hybrid_loss(out, target, kl_weight=0.5, intermediate_weight=2.0)
    assert set(parts) == {"mse", "intermediate", "kl"}
    expect = parts["mse"] + 2.0 * parts["intermediate"] + 0.5 * parts["kl"]
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="target shape"):
        hybrid_loss(out, target[:, :10], 0.0)


def test_without_skips_there_is_no_intermediate_term() -> None:
    model = tiny(n_skips=0)
    x, target = synthetic(2, S)
    out = model(x)
    assert out.intermediate == [] and out.levels == ()
    assert hybrid_loss(out, target, kl_weight=0.0)[1]["intermediate"] == 0.0


def test_kl_of_standard_normal_is_zero() -> None:
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0
    # one dim with mu = 1: KL = 0.5 per sample
    assert kl_divergence(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)).item() == pytest.approx(0.5)


def test_tiny_model_overfits_synthetic_lungs() -> None:
    x, target = synthetic(4, S)
    model = tiny(untrained=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def error_px() -> float:
        model.eval()
        with torch.no_grad():
            err = ((model(x).landmarks - target).norm(dim=-1) * S).mean().item()
        model.train()
        return err

    initial = error_px()
    mean_shape = ((target.mean(0, keepdim=True) - target).norm(dim=-1) * S).mean().item()
    mse = []
    for _ in range(200):
        loss, parts = hybrid_loss(model(x), target, kl_weight=1e-4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mse.append(parts["mse"])
    final = error_px()
    print(f"error px: initial {initial:.2f}, mean shape {mean_shape:.2f}, final {final:.2f}")
    assert np.mean(mse[-10:]) < 0.05 * mse[0]
    # well below the start (all nodes at the centre) and below the best image-blind answer
    assert final < 0.15 * initial
    assert final < 0.6 * mean_shape
