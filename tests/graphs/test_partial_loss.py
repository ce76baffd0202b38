"""Partial labels: unlabelled structures and cases give no loss and no gradient; the mask
(Chamfer) loss pulls a contour onto its mask."""

import numpy as np
import pytest
import torch

from anatomix.anatomy import LUNGS_HEART
from anatomix.graphs.loss import boundary_loss, chamfer_to_boundary, hybrid_loss
from anatomix.graphs.model import GraphOutput

N = LUNGS_HEART.n_nodes


def _ring(n: int, r: float, centre=(0.5, 0.5), phase: float = 0.0) -> torch.Tensor:
    t = torch.linspace(0, 2 * np.pi, n + 1)[:-1] + phase
    return torch.stack([centre[0] + r * torch.cos(t), centre[1] + r * torch.sin(t)], dim=-1)


def _output(landmarks: torch.Tensor) -> GraphOutput:
    b = landmarks.shape[0]
    return GraphOutput(landmarks, [], (), torch.zeros(b, 4), torch.zeros(b, 4), "lungs_heart")


def _template_rings(b: int) -> torch.Tensor:
    """(b, 120, 2) landmarks: one ring per structure at distinct places."""
    rings = [_ring(s.count, 0.1, centre) for s, centre in
             zip(LUNGS_HEART.structures, [(0.3, 0.4), (0.7, 0.4), (0.5, 0.65)])]
    return torch.cat(rings)[None].repeat(b, 1, 1)


def test_chamfer_decreases_as_the_contour_moves_onto_the_mask():
    boundary = _ring(96, 0.2)[None]
    losses = [float(chamfer_to_boundary(_ring(44, r, phase=0.3)[None], boundary)) for r in
              (0.40, 0.32, 0.26, 0.22, 0.20)]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 1e-4 < losses[0]  # the floor is the spacing of the boundary samples


def test_chamfer_sees_a_contour_that_covers_only_part_of_the_mask():
    boundary = _ring(96, 0.2)[None]
    full = _ring(44, 0.2)[None]
    # all nodes on the boundary, but bunched on one half: the far half of the mask is uncovered
    half = torch.stack([0.5 + 0.2 * torch.cos(torch.linspace(0, np.pi, 44)),
                        0.5 + 0.2 * torch.sin(torch.linspace(0, np.pi, 44))], -1)[None]
    assert float(chamfer_to_boundary(half, boundary)) > 20 * float(chamfer_to_boundary(full, boundary))


def test_unlabelled_structure_gets_no_gradient():
    landmarks = (_template_rings(2) + 0.03).requires_grad_(True)  # off their boundaries
    boundary = torch.stack([_ring(64, 0.1, c) for c in [(0.3, 0.4), (0.7, 0.4), (0.5, 0.65)]])[None].repeat(2, 1, 1, 1)
    has = torch.tensor([[True, True, False], [True, False, False]])  # no heart anywhere, case 1 no lungL
    loss = boundary_loss(_output(landmarks), boundary, has)
    loss.backward()
    grad = landmarks.grad
    sl = LUNGS_HEART.slices()
    assert torch.all(grad[:, sl["heart"]] == 0)
    assert torch.all(grad[1, sl["lungL"]] == 0)
    assert grad[0, sl["lungL"]].abs().sum() > 0 and grad[:, sl["lungR"]].abs().sum() > 0


def test_no_labelled_pair_gives_zero_loss_that_still_backpropagates():
    landmarks = _template_rings(1).requires_grad_(True)
    loss = boundary_loss(_output(landmarks), torch.zeros(1, 3, 8, 2), torch.zeros(1, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(landmarks.grad == 0)


def test_case_without_landmarks_gets_no_landmark_gradient():
    landmarks = _template_rings(2).requires_grad_(True)
    target = torch.rand(2, N, 2)  # case 1's row is garbage: it has no landmarks
    loss, parts = hybrid_loss(_output(landmarks), target, 0.0, has_landmarks=torch.tensor([True, False]))
    loss.backward()
    assert torch.all(landmarks.grad[1] == 0) and landmarks.grad[0].abs().sum() > 0
    expected = float((landmarks[0] - target[0]).pow(2).mean())
    assert parts["mse"] == pytest.approx(expected, rel=1e-5)


def test_all_labelled_matches_the_plain_mse():
    landmarks, target = torch.rand(3, N, 2), torch.rand(3, N, 2)
    a = hybrid_loss(_output(landmarks), target, 0.0)[0]
    b = hybrid_loss(_output(landmarks), target, 0.0, has_landmarks=torch.ones(3, dtype=torch.bool))[0]
    assert torch.allclose(a, b) and torch.allclose(a, torch.nn.functional.mse_loss(landmarks, target))
