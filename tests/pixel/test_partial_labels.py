"""The pixel loss over partial labels: an unlabelled channel gives no loss and no gradient."""

import torch
from monai.losses import DiceCELoss, DiceLoss

from anatomix.pixel.train import partial_dice_ce


def test_unlabelled_heart_gets_zero_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, generator=g, requires_grad=True)
    target = (torch.rand(2, 3, 16, 16, generator=g) > 0.5).float()
    target[1, 2] = 0  # case 1 has no heart mask: its heart channel is empty, NOT "no heart"
    has = torch.tensor([[True, True, True], [True, True, False]])
    partial_dice_ce(logits, target, has, DiceLoss(sigmoid=True, reduction="none")).backward()
    assert torch.all(logits.grad[1, 2] == 0)
    assert logits.grad[0, 2].abs().sum() > 0 and logits.grad[1, :2].abs().sum() > 0


def test_fully_labelled_equals_soft_dice_plus_bce():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 3, 16, 16, generator=g)
    target = (torch.rand(3, 3, 16, 16, generator=g) > 0.6).float()
    ours = partial_dice_ce(logits, target, None, DiceLoss(sigmoid=True, reduction="none"))
    expected = DiceLoss(sigmoid=True)(logits, target) + torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(ours, expected, atol=1e-6)
    # MONAI's DiceCELoss is NOT this for several channels: it applies softmax cross-entropy
    # across them even with sigmoid=True, which suits exclusive classes, not overlapping ones
    assert not torch.allclose(DiceCELoss(sigmoid=True)(logits, target), expected, atol=1e-3)
